"""Progress of long steps on stderr: a tqdm bar on a terminal, plain timed lines anywhere else.

A bar redraws itself with carriage returns, which a log file or a CI console shows as one endless
line (or not at all until the end). Off a terminal (a batch job, ``nohup``, a container's log) lsmap
instead writes a line now and then, at most one every :data:`LINE_INTERVAL_S` seconds, and one at the
end when it wrote any, so a short step prints nothing and a long one says where it is:

    detect: 212/529 windows (40 %), 12 s, about 18 s left
    detect: 529/529 windows in 30 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LINE_INTERVAL_S = 15.0


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, leave: bool = True, initial: int = 0, **tqdm_kw: Any):
    """A progress display over ``iterable`` (or updated by hand, ``total`` steps): tqdm's interface.

    ``disable`` shows nothing; on a terminal it is a tqdm bar; elsewhere a :class:`LineProgress`.
    """
    from tqdm.auto import tqdm

    if disable or is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial,
                    **tqdm_kw)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                        unit_scale=bool(tqdm_kw.get("unit_scale")))


def is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class LineProgress:
    """tqdm's ``update``/``close``/iteration/context interface, writing plain lines to stderr."""

    disable = False

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, interval: float | None = None, clock=time.monotonic,
                 stream=None, unit_scale: bool = False) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = initial
        self.interval = LINE_INTERVAL_S if interval is None else interval
        self.clock, self.stream = clock, stream
        self.t0 = self.last = clock()
        self.lines = 0
        self.closed = False
        self.unit_scale = unit_scale  # counts of bytes (unit "B") shown in MB

    def _count(self, n: int) -> str:
        return f"{n / 1e6:.1f}" if self.unit_scale else str(n)

    @property
    def _unit(self) -> str:
        return f"M{self.unit}" if self.unit_scale else self.unit

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, *args, **kwargs) -> None:
        """tqdm's; the lines carry no postfix."""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._write(self._line(now))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lines:  # a long step: say it ended
            of = f"/{self._count(self.total)}" if self.total else ""
            self._write(f"{self.desc}: {self._count(self.n)}{of} {self._unit} in {_duration(self.clock() - self.t0)}")

    def _line(self, now: float) -> str:
        elapsed = now - self.t0
        if not self.total:
            return f"{self.desc}: {self._count(self.n)} {self._unit}, {_duration(elapsed)}"
        share = self.n / self.total
        text = (f"{self.desc}: {self._count(self.n)}/{self._count(self.total)} {self._unit} ({100 * share:.0f} %), "
                f"{_duration(elapsed)}")
        done = self.n - self.start_n
        if 0 < done and self.n < self.total:
            text += f", about {_duration(elapsed / done * (self.total - self.n))} left"
        return text

    def _write(self, text: str) -> None:
        self.lines += 1
        stream = self.stream if self.stream is not None else sys.stderr
        try:
            print(text, file=stream, flush=True)
        except (OSError, ValueError):  # a closed or broken log must not stop the work
            pass


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
