"""Errors lsmap raises on bad input.

Every error names the file (or option) at fault and says how to fix it. The CLI turns any
:class:`LsmapError` into a one-line message and a non-zero exit; library callers can catch the
builtin base class as well (``ValueError``, ``FileNotFoundError``, ...).
"""

from __future__ import annotations


def user_level() -> int:
    """The ``stacklevel`` at which a warning names the caller's own line, the first frame outside lsmap (scripts
    saw ``lsmap/map/detect.py:395`` instead; found by the API audit): ``warnings.warn(msg, LsmapWarning,
    stacklevel=user_level())``."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1  # the function calling warnings.warn is level 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level


class LsmapError(Exception):
    """Base class of all lsmap errors: the message is meant for the user as it is."""


class InputError(LsmapError, ValueError):
    """An input file or option is unusable (wrong shape, unreadable, inconsistent)."""


class MissingInputError(LsmapError, FileNotFoundError):
    """A required input file or folder does not exist."""


class BandMismatchError(InputError):
    """An input has another number of bands than its band profile expects."""

    def __init__(self, path: object, profile: str, expected: int, found: int) -> None:
        super().__init__(
            f"{path}: band profile '{profile}' expects {expected} bands but the file has {found}; "
            f"choose the matching profile with `bands` or restack the input"
        )
        self.path, self.profile, self.expected, self.found = path, profile, expected, found


class MissingBandError(InputError):
    """Bands a model or band set needs are not among the bands of an input.

    Attributes:
        bands: The missing band names (``band``: the first).
    """

    def __init__(self, bands: tuple[str, ...], source: object, user: object = None,
                 available: tuple[str, ...] = (), fix: str = "restack the input with them, or use a model or "
                                                           "`bands` without them") -> None:
        which = f"band {bands[0]}" if len(bands) == 1 else f"bands {', '.join(bands)}"
        who = f" needed by {user}" if user is not None else ""
        has = f" (it has {', '.join(available)})" if available else ""
        super().__init__(f"{source}: no {which}{who}{has}; {fix}")
        self.bands, self.band, self.source, self.user, self.available = bands, bands[0], source, user, available


class OutputExistsError(LsmapError, FileExistsError):
    """An output exists and ``overwrite`` was not given."""

    def __init__(self, path: object, alternative: str = "") -> None:
        super().__init__(f"{path}: output exists; pass `overwrite` to replace it{alternative}")
        self.path = path


class LsmapWarning(UserWarning):
    """Something in the input looks wrong but the work can go on (DNs that look offset, a DEM that
    covers part of the scene); the CLI prints it as a one-line ``Warning: ...``."""


class CheckpointError(LsmapError, ValueError):
    """A checkpoint is unreadable or does not fit the input it is asked to process."""


class NoModelError(CheckpointError, InputError):
    """An empty list of models where at least one checkpoint is needed (one message for every caller)."""

    def __init__(self) -> None:
        super().__init__("no model given; pass `models` (one or more checkpoints)")


class OutputError(LsmapError, OSError):
    """An output cannot be written: read-only or full filesystem, a parent that is a file, no permission."""


class NoSpaceError(OutputError):
    """The filesystem of an output is full."""


class OutputLockedError(OutputError):
    """Another lsmap run is writing the same output."""


class OutputOwnershipError(OutputError):
    """An output folder holds files lsmap did not write (or is the working/home directory): never replaced."""


class TooLargeError(InputError):
    """A run would need more memory or disk than there is; the message gives the estimate."""


class OutsideError(InputError):
    """The area of interest does not overlap the input (a scene of a several-scene run that lies elsewhere: not a
    failure there)."""
