"""The public API: every name in ``lsmap.__all__`` resolves, and ``import lsmap`` stays light."""

from __future__ import annotations

import subprocess
import sys

import lsmap


def test_every_public_name_resolves():
    for name in lsmap.__all__:
        assert getattr(lsmap, name) is not None, name
    assert callable(lsmap.detect) and callable(lsmap.stack_scene) and issubclass(lsmap.InputError, ValueError)


def test_import_lsmap_imports_no_heavy_dependency():
    code = "import sys, lsmap; print(sorted(m for m in ('torch', 'numpy', 'rasterio', 'click') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_line_starts_without_numpy_torch_or_rasterio():
    """`lsmap --help` and every command's --help stay instant: each command imports its libraries when it runs."""
    heavy = "('torch', 'numpy', 'rasterio', 'geopandas', 'urllib.request', 'zipfile')"
    code = f"import sys; from lsmap.cli import main; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_lsmap_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "lsmap", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("lsmap, version")
