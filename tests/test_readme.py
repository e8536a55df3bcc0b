"""The README's examples run as written on the bundled sample data.

Every ```console and ```python block is run in order, in a temporary folder that looks like a
fresh clone after the quickstart (``sample_data/`` and ``models/``, ``.venv/bin/lsmap`` and
``.venv/bin/python`` running this checkout). Skipped, and said so: blocks whose first line is
``# needs ...`` (internet, a Dask cluster, the real data), the virtual-environment setup of the
quickstart (already done here) and the test-suite command (this is the test suite). The
quickstart's detection is the fast subset of the default run; the whole README is ``slow``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(\w*)\s*$")


def readme_blocks(path: Path = ROOT / "README.md") -> list[tuple[str, str, str]]:
    """``(section, language, text)`` of every fenced block, in order."""
    blocks, section, lang, lines = [], "", None, []
    for line in path.read_text().splitlines():
        m = _FENCE.match(line)
        if lang is None and line.startswith("## "):
            section = line[3:].strip()
        elif lang is None and m:
            lang, lines = m.group(1), []
        elif lang is not None and line.startswith("```"):
            blocks.append((section, lang, "\n".join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def shell_commands(text: str) -> list[str]:
    """The commands of a console block: continuation lines joined, comments and setup left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p for p in line.split(" && ") if not p.startswith(("python3 -m venv", ".venv/bin/pip "))]
        commands.append(" && ".join(parts))
    return commands


def runnable(blocks):
    """``(section, language, text)`` of the blocks to run, with the skipped ones' reasons."""
    keep, skipped = [], []
    for section, lang, text in blocks:
        first = text.strip().splitlines()[0] if text.strip() else ""
        if lang not in ("console", "python"):
            continue
        if first.startswith("# needs"):
            skipped.append(f"{section}: {first}")
        elif "pytest" in text:
            skipped.append(f"{section}: the test suite itself")
        else:
            keep.append((section, lang, text))
    return keep, skipped


@pytest.fixture
def clone(tmp_path):
    """A folder like a fresh clone after the quickstart (outputs land here, not in the checkout)."""
    for name in ("sample_data", "models"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "lsmap").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lsmap "$@"\n')
    (bin_dir / "lsmap").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return tmp_path, env


def _run(kind: str, code: str, cwd: Path, env: dict) -> None:
    argv = ["bash", "-euo", "pipefail", "-c", code] if kind == "console" else [sys.executable, "-c", code]
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"README example failed: {code}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"


def test_readme_parses_into_blocks_and_skips_only_what_cannot_run_here():
    keep, skipped = runnable(readme_blocks())
    assert any(s == "Quickstart" for s, _, _ in keep)
    assert all(any(w in s for w in ("internet", "Dask cluster", "shared/data", "test suite")) for s in skipped)
    for _, _lang, text in keep:  # no example names a file that is neither bundled nor made earlier
        assert "a.safetensors" not in text and "L4S_ROOT" not in text


def test_quickstart_runs_as_written(clone):
    cwd, env = clone
    (_, _, text), *_ = [b for b in runnable(readme_blocks())[0] if b[0] == "Quickstart"]
    for cmd in shell_commands(text):
        _run("console", cmd, cwd, env)
    assert (cwd / "out" / "slides.gpkg").exists() and (cwd / "out" / "slides.png").exists()


@pytest.mark.slow
def test_every_readme_example_runs_as_written(clone):
    cwd, env = clone
    keep, _ = runnable(readme_blocks())
    for _, lang, text in keep:
        if lang == "console":
            for cmd in shell_commands(text):
                _run("console", cmd, cwd, env)
        else:
            _run("python", text, cwd, env)
    assert (cwd / "event" / "slides.gpkg").exists() and (cwd / "runs" / "sample" / "best.safetensors").exists()
    assert not list((ROOT / "lsmap" / "weights").glob("*.part")), "nothing written into the package"
