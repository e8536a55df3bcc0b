"""Distributed data parallel training with two CPU processes on the gloo backend."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from patchgen import make_patches

from lsmap.learn.models import read_card, read_state_dict


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    from safetensors.torch import save_file

    from lsmap.learn.train import TrainConfig, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    root = Path(root)
    config = TrainConfig(model="tiny-unet", steps=6, batch_size=4, scale=1.0, val_every=3, lr=3e-3, amp=False,
                         device="cpu", mixup_alpha=0.3)
    result = train(root / "run", train_dir=root / "train", val_dir=root / "val", config=config, progress=False)
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(root / f"rank{rank}.safetensors"))
    (root / f"rank{rank}.f1").write_text(repr(result.best_metrics["f1"]))


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    make_patches(tmp_path / "train", 8, size=32, seed=1)
    make_patches(tmp_path / "val", 5, size=32, seed=2)  # odd: the ranks validate shards of 3 and 2
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = read_state_dict(tmp_path / "rank0.safetensors"), read_state_dict(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the weights moved from their initialisation, rank 0 wrote the run, both saw the same val F1
    assert (tmp_path / "rank0.f1").read_text() == (tmp_path / "rank1.f1").read_text()
    last = read_state_dict(tmp_path / "run" / "last.safetensors")
    assert all(torch.equal(last[k], a[k]) for k in a)
    card = read_card(tmp_path / "run" / "best")
    assert card.train["world_size"] == 2 and card.train["batch_size"] == 4


@pytest.mark.slow
def test_torchrun_cli(tmp_path):
    """``torchrun --nproc_per_node 2 -m lsmap.cli train ...`` runs and writes one run folder."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    make_patches(tmp_path / "train", 8, size=32, seed=1)
    make_patches(tmp_path / "val", 4, size=32, seed=2)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "lsmap.cli", "train",
         "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--model", "tiny-unet", "--scale", "1",
         "--steps", "4", "--val-every", "2", "--batch-size", "4", "--device", "cpu", "-o", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("best:") == 1  # rank 0 only
    assert read_card(tmp_path / "run" / "best").train["world_size"] == 2


def _stats_worker(rank: int, world: int, port: int, out: str) -> None:
    from lsmap.learn.domain_bn import TARGET, DomainBatchNorm2d
    from lsmap.learn.train import _Dist

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    bn = DomainBatchNorm2d(3).train()
    bn.domain = TARGET
    with torch.no_grad():
        bn(torch.full((2, 3, 4, 4), float(10 * (rank + 1))) + torch.randn(2, 3, 4, 4))  # ranks see other images
    _Dist(rank, world).average_domain_stats(bn, TARGET)
    torch.save({"mean": bn.running_mean.clone(), "var": bn.running_var.clone()}, Path(out) / f"stats{rank}.pt")
    torch.distributed.destroy_process_group()


def test_target_statistics_are_averaged_over_ranks(tmp_path):
    """Domain BN's statistics-only stream runs outside DDP: every rank's batches count, not rank 0's alone."""
    mp.spawn(_stats_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"stats{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(a["mean"], b["mean"]) and torch.equal(a["var"], b["var"])
    # momentum 0.1 from 0: rank 0's images near 10, rank 1's near 20 -> 0.1 * 15, not 0.1 * 10
    assert torch.allclose(a["mean"][1], torch.full((3,), 1.5), atol=0.1)
    assert torch.equal(a["mean"][0], torch.zeros(3))  # the source's row untouched
