"""Each command's --help shows at least one example that runs as written on ``sample_data/``.

An example is a ``$ lsmap ...`` line (with ``\\`` continuations); those naming ``sample_data/``
are the runnable ones and are run here, in a folder with ``sample_data`` beside the outputs.
``download`` needs internet (its loopback test is tests/io/test_download.py); ``info`` runs without
data. The quick commands run by default, the training ones are ``slow``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from lsmap.cli import main

ROOT = Path(__file__).resolve().parents[2]
FAST = ("stats", "evaluate", "info", "tile", "stack", "detect")
SLOW = ("train", "refine")


def examples(command: str) -> list[str]:
    """The ``$ lsmap ...`` example lines of ``command``'s help, continuations joined."""
    text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    text = re.sub(r"\\\n\s*", " ", text)
    return [ln.strip()[2:] for ln in text.splitlines() if ln.strip().startswith("$ lsmap ")]


def runnable(command: str) -> list[str]:
    lines = examples(command)
    if command == "info":  # shipped model names, and inputs from sample_data/
        return [ln for ln in lines if "/" not in ln or "sample_data/" in ln]
    return [ln for ln in lines if "sample_data/" in ln]


def test_every_command_has_a_runnable_example():
    assert set(main.commands) == {*FAST, *SLOW, "download"}
    for command in (*FAST, *SLOW):
        assert runnable(command), f"lsmap {command} --help shows no example on sample_data/"


def _run_examples(command: str, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    for line in runnable(command):
        argv = [a for a in shlex.split(line, comments=True)][1:]
        res = CliRunner().invoke(main, argv)
        assert res.exit_code == 0, f"{line}\n{res.output}"


@pytest.mark.parametrize("command", FAST)
def test_quick_examples_run(command, tmp_path, monkeypatch):
    _run_examples(command, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("command", SLOW)
def test_training_examples_run(command, tmp_path, monkeypatch):
    _run_examples(command, tmp_path, monkeypatch)


def test_detect_help_names_the_shipped_defaults_in_their_order():
    """detect --help said 'without --model the default model is used': it is the first shipped default whose
    bands the scene has (the docs audit)."""
    from lsmap.learn.models import DEFAULT_MODELS

    text = " ".join(CliRunner().invoke(main, ["detect", "--help"], terminal_width=200).output.split())
    positions = [text.find(name + ",") if name != DEFAULT_MODELS[-1] else text.find(name + ")")
                 for name in DEFAULT_MODELS]
    assert -1 not in positions and positions == sorted(positions), text
