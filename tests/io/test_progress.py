"""lsmap.io.progress: a bar on a terminal, plain timed lines elsewhere (logs, batch jobs)."""

from __future__ import annotations

import io

from click.testing import CliRunner

from lsmap.io import progress as progress_mod
from lsmap.io.progress import LineProgress, progress_bar


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_short_step_prints_nothing_a_long_one_says_where_it_is_and_that_it_ended():
    clock, out = Clock(), io.StringIO()
    with LineProgress(total=10, desc="detect", unit="windows", interval=15, clock=clock, stream=out) as bar:
        for _ in range(10):
            clock.t += 1
            bar.update(1)
    assert out.getvalue() == ""  # 10 s: under the interval

    clock, out = Clock(), io.StringIO()
    with LineProgress(total=100, desc="detect", unit="windows", interval=15, clock=clock, stream=out) as bar:
        for _ in range(100):
            clock.t += 0.5
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "detect: 30/100 windows (30 %), 15 s, about 35 s left"
    assert lines[1] == "detect: 60/100 windows (60 %), 30 s, about 20 s left"
    assert lines[-1] == "detect: 100/100 windows in 50 s" and len(lines) == 4
    assert "\r" not in out.getvalue()


def test_iteration_resumed_counts_bytes_and_unknown_totals():
    clock, out = Clock(), io.StringIO()

    def slow():
        for i in range(4):
            clock.t += 100
            yield i

    assert list(LineProgress(slow(), desc="scenes", unit="scene", interval=60, clock=clock, stream=out)) == [0, 1, 2, 3]
    assert out.getvalue().splitlines() == [
        "scenes: 1 scene, 1 min 40 s", "scenes: 2 scene, 3 min 20 s", "scenes: 3 scene, 5 min 00 s",
        "scenes: 4 scene, 6 min 40 s", "scenes: 4 scene in 6 min 40 s"]
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(total=3_000_000_000, initial=1_000_000_000, desc="l4s.zip", unit="B", unit_scale=True,
                       interval=10, clock=clock, stream=out)
    clock.t = 3600
    bar.update(1_000_000_000)  # 1 GB in an hour since the resume: another 2 h for the last 1 GB
    assert out.getvalue() == "l4s.zip: 2000.0/3000.0 MB (67 %), 1 h 00 min, about 1 h 00 min left\n"


def test_a_broken_log_does_not_stop_the_work():
    out = io.StringIO()
    out.close()
    bar = LineProgress(total=2, interval=0, stream=out)
    bar.update(2)
    bar.close()  # no ValueError from the closed stream


def test_off_a_terminal_progress_is_lines_and_disabled_is_nothing(monkeypatch):
    monkeypatch.setattr(progress_mod, "is_terminal", lambda: False)
    assert isinstance(progress_bar(total=3, desc="x"), LineProgress)
    assert not isinstance(progress_bar(total=3, desc="x", disable=True), LineProgress)
    monkeypatch.setattr(progress_mod, "is_terminal", lambda: True)
    assert not isinstance(progress_bar(total=3, desc="x"), LineProgress)


def test_lsmap_detect_writes_progress_lines_to_a_log(tmp_path, monkeypatch):
    """Off a terminal (CliRunner, like a log file) detect writes plain lines, no carriage returns; with
    --json none at all."""
    from pathlib import Path

    from lsmap.cli import main

    sample = Path(__file__).resolve().parents[2] / "sample_data" / "scene_l4s14.tif"
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL_S", 0.0)
    res = CliRunner().invoke(main, ["detect", str(sample), "-o", str(tmp_path / "s.gpkg")])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output
    assert any(line.startswith("detect: ") and " win " in line for line in res.output.splitlines())
    res = CliRunner().invoke(main, ["detect", str(sample), "-o", str(tmp_path / "t.gpkg"), "--json"])
    assert res.exit_code == 0 and not any(line.startswith("detect: ") for line in res.output.splitlines())
