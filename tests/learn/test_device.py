"""Memory format and precision choices per device: channels-last inference on every CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lsmap.learn.device as device
from lsmap.learn.device import inference_channels_last, use_channels_last
from lsmap.learn.ensemble import member_logits
from lsmap.learn.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detect_fixtures import member, write_scene  # noqa: E402


@pytest.fixture(params=[False, True], ids=["no-bf16", "bf16"])
def bf16(request, monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: request.param)
    return request.param


def test_cpu_inference_is_channels_last_with_or_without_bfloat16(bf16):
    cpu = torch.device("cpu")
    assert inference_channels_last(cpu, amp=True) and inference_channels_last(cpu, amp=False)
    assert use_channels_last(cpu, True) is bf16  # training: only with bfloat16 autocast
    assert not use_channels_last(cpu, False)


def test_channels_last_logits_equal_contiguous_ones_in_float32(monkeypatch):
    """The format changes the kernels, not the result (float32: a few units in the last place)."""
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    torch.manual_seed(0)
    m = member(build_model("tiny-unet", 14).eval())
    x = 1.0 + 0.3 * torch.randn(2, 14, 96, 96)
    got = member_logits(m, x)
    monkeypatch.setattr("lsmap.learn.ensemble.inference_channels_last", lambda *a: False)
    want = member_logits(m, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_detect_runs_cpu_models_channels_last_without_bfloat16(tmp_path, monkeypatch):
    """predict_scene's plan puts the (folded) models in channels-last on a CPU without bfloat16 units."""
    from lsmap.map.stream import _plan

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    scene = write_scene(tmp_path / "s.tif", np.ones((14, 64, 64), np.float32))
    torch.manual_seed(0)
    plan = _plan(scene, [member(build_model("tiny-unet", 14).eval())], None, None, False, 16, 64, None, "cpu",
                 True, None)
    convs = [c for c in plan.bands.members[0].module.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_loaded_members_are_channels_last_on_a_cpu(tmp_path, monkeypatch):
    """Evaluation and refinement run loaded members as detection does: weights channels-last on a CPU."""
    from detect_fixtures import tiny_checkpoint

    from lsmap.learn.ensemble import load_ensemble

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    (m,) = load_ensemble([tiny_checkpoint(tmp_path / "m")], "cpu")
    convs = [c for c in m.module.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_a_gpu_is_named_by_its_index(monkeypatch):
    """The library took cuda:N but the command line refused it (found by a code review); an index past the GPUs
    and a misspelt name are one-line errors (a torch RuntimeError for 'cudax' before)."""
    import torch
    from click.testing import CliRunner

    from lsmap.cli import main
    from lsmap.errors import InputError
    from lsmap.learn.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match=r"`device` cuda:2: 2 CUDA GPU\(s\) visible \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(InputError, match="unknown device 'cudax'"):
        resolve_device("cudax")
    r = CliRunner().invoke(main, ["detect", "scene.tif", "-o", "x.gpkg", "--device", "gpu"])
    assert r.exit_code == 2 and "'gpu' is not one of auto, cpu, cuda or cuda:N" in r.output
    r = CliRunner().invoke(main, ["detect", "missing.tif", "-o", "x.gpkg", "--device", "cuda:1"])
    assert "--device" not in r.output  # taken; the run fails on the missing scene instead


def test_a_gpu_runs_random_state_is_saved_and_restored_for_one_process(monkeypatch, tmp_path):
    """The CUDA generator's state travels with the training state (here a stand-in generator on the CPU)."""
    from lsmap.learn.device import restore_rng_states, rng_states
    from lsmap.learn.run_folder import load_state, save_state

    gpu = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8), "set": []}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda dev: gpu["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, dev: gpu["set"].append(s.tolist()))
    cuda = torch.device("cuda", 0)
    save_state(tmp_path / "state.pt", {"step": 3, **rng_states(cuda)})  # read back weights-only
    state = load_state(tmp_path / "state.pt")
    assert state["rng_cuda"].tolist() == [1, 2, 3]
    drawn = torch.rand(2)
    restore_rng_states(state, cuda, world=2)  # several GPUs: rank 0's state is not given to every rank
    assert gpu["set"] == [] and torch.equal(torch.rand(2), drawn)  # the CPU generator is restored
    restore_rng_states(state, cuda, world=1)
    assert gpu["set"] == [[1, 2, 3]]
    restore_rng_states(state, torch.device("cpu"))  # resumed on the CPU: the CPU generator only
    assert gpu["set"] == [[1, 2, 3]] and "rng_cuda" not in rng_states(torch.device("cpu"))
