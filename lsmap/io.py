"""The one module that opens files: rasters, HDF5 patches, vector layers, and atomic outputs.

Outputs are written to a temporary name beside the target and renamed into place only when
complete, so an interrupted or failed run never leaves a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path, raising :class:`OutputExistsError` if it exists and not ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The temporary name keeps the suffix of ``path`` so that drivers chosen by extension (GDAL,
    pyogrio) still pick the right format. On any exception the temporary file (or folder) is
    removed and ``path`` is left untouched.

    Args:
        path: Final output path.
        overwrite: Replace an existing ``path``; otherwise an existing output is an error.
        directory: The output is a folder (it is created empty at the temporary path).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false (raised before any work).
    """
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
