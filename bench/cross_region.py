"""Benchmark: does self-training refinement hold up in a new region? (source model vs refine rounds)

Cases (``--case``):

- ``rgbn`` / ``rgb``: source = the 15 labelled L4S patches of ``../shared/data/l4s/train`` (bands
  B4, B3, B2, B8 / B4, B3, B2 taken by name); target = the real Sentinel-2 RGBN mosaic of Chittagong
  (``scenes/chittagong_s2_rgbn/mosaic/``), cut by ``lsmap tile --bands rgbn --raw --labels ...
  --label-map 0:255,1:0,2:1``. A real cross-region, cross-sensor-processing shift.
- ``l4s14``: 14 bands; source = 12 of the labelled L4S patches, target = the other 3 (labels hidden)
  plus the 19 unlabelled L4S patches, as ``bench/refine_l4s.py`` builds it.

Target masks are used only to score (refine reads them only for its per-round report, never for
training, normalisation choice, guards or checkpoint choice). The Chittagong labels are sparse
polygons (1,989 landslide and 2,428 non-landslide pixels in the tiled patches), so the landslide F1
is computed over those pixels only: predicting "landslide" everywhere would score 0.62 there. The
rows therefore also give precision, recall and the predicted landslide share of the whole target.

Stages (each one call, results appended to ``--json``; every stage of a (case, seed) reuses the
source model trained by the ``source`` stage, kept under ``--work``):

- ``--stage source``: train the source model (tiny-unet, scale 1), score it on the target with the
  source statistics (``model`` normalisation) and with the target's own (``own``);
- ``--stage refine --strategy S --variant V``: refine rounds from that source model; ``V`` names a
  set of RefineConfig settings (:data:`VARIANTS`: ``old`` = the behaviour before issue 16).

``--table`` prints the markdown table (means over seeds) from the JSON. Sizes (defaults): source
150 steps, batch 8; refine 2 rounds of 40 steps, batch 8 per stream; about 1-3 min per stage on
2 CPU cores.

    $ PYTHONPATH=. python bench/cross_region.py --case rgbn --seed 0 --stage source --json /tmp/xr.json
    $ PYTHONPATH=. python bench/cross_region.py --case rgbn --seed 0 --stage refine --strategy threshold \\
        --variant new --json /tmp/xr.json
    $ PYTHONPATH=. python bench/cross_region.py --table --json /tmp/xr.json

Exits with a message (status 0) when ../shared/data is absent. Writes only under ``--work``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("LSMAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
L4S = SHARED / "l4s"
SCENE = SHARED / "scenes" / "chittagong_s2_rgbn" / "mosaic"
CASES = ("rgbn", "rgb", "l4s14")
#: RefineConfig settings of each variant (``old``: before issue 16; ``new``: the defaults now).
VARIANTS = {
    "old": dict(norm="own", teacher="previous", select="last", guard=False),
    "new": dict(),
    "own": dict(norm="own"),
    "model": dict(norm="model"),
    "noguard": dict(guard=False),
    "previous": dict(teacher="previous"),
    "select-last": dict(select="last"),
}


def _tile_target(work: Path) -> Path:
    """The Chittagong patches (tiled once, kept under ``work``)."""
    from lsmap.data.tile import tile_scene

    out = work / "chittagong"
    if not (out / "tiles.json").exists():
        tile_scene(SCENE / "chittagong_s2_rgbn_mosaic.tif", out, bands="rgbn", raw=True,
                   labels=SCENE / "chittagong_labels_mosaic.tif", label_map="0:255,1:0,2:1", overwrite=True)
    return out


def folders(case: str, seed: int, work: Path) -> dict:
    """Source and target folders of a case (the l4s14 split depends on the seed)."""
    if case == "l4s14":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from refine_l4s import build_folders

        root = work / f"l4s14_s{seed}" / "data"
        if not (root / "source").exists():
            build_folders(root, 3, seed)
        return {"source": root / "source", "target": root / "target", "bands": "l4s14"}
    return {"source": L4S / "train", "target": _tile_target(work), "bands": case}


def _score(members, target: Path, stats, profile) -> dict:
    """Scores on the labelled target pixels plus the predicted landslide share of the whole target."""
    import torch

    from lsmap.core.metrics import Confusion, confusion, scores
    from lsmap.io.patches import find_patches, read_mask
    from lsmap.learn.ensemble import inference_context, predict_proba
    from lsmap.learn.refine.rounds import _batches

    patches = find_patches(target)
    thr = float(np.mean([m.card.threshold for m in members]))
    total, ls, n = Confusion(), 0, 0
    probs, truth = [], []
    with inference_context("cpu", False):
        for group, x in _batches(patches, profile, 16):
            prob = predict_proba(members, torch.from_numpy(x), stats, amp=False).numpy()
            valid = ~(x == 0.0).all(axis=1)  # lsmap tile's nodata fill
            for k, p in enumerate(group):
                pred = prob[k] >= thr
                ls += int((pred & valid[k]).sum())
                n += int(valid[k].sum())
                if p.mask is not None:
                    m = read_mask(p.mask)
                    total = total + confusion(pred, m)
                    probs.append(prob[k][m <= 1])
                    truth.append(m[m <= 1])
    s = scores(total)
    return {"f1": s["f1"], "precision": s["precision"], "recall": s["recall"], "pred_share": ls / n,
            "auc": _auc(np.concatenate(probs), np.concatenate(truth)) if probs else None}


def _auc(prob: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks): threshold-free, 0.5 = chance."""
    from scipy.stats import rankdata

    pos, neg = int((truth == 1).sum()), int((truth == 0).sum())
    if not pos or not neg:
        return None
    ranks = rankdata(prob)
    return float((ranks[truth == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def rescore(args) -> None:
    """Recompute the scores of rows from an older version of this script from the checkpoints kept under
    ``--work`` (adds the AUC and valid-pixel shares). Only the last row of a (case, seed, strategy,
    variant) still has its checkpoints; earlier duplicates keep their old scores (the table reads the last)."""
    from lsmap.core.bands import get_profile
    from lsmap.core.normalize import BandStats
    from lsmap.data.stats import patch_stats
    from lsmap.io.patches import find_patches
    from lsmap.learn.ensemble import load_ensemble

    rows = json.loads(args.json.read_text())
    for row in rows:
        if "auc" in (row.get("own") or (row.get("rounds") or [{}])[-1].get("scores") or {}):
            continue  # scored by this version already
        f = folders(row["case"], row["seed"], args.work)
        run = args.work / f"{row['case']}_s{row['seed']}"
        profile = get_profile(f["bands"])
        if row["stage"] == "source":
            members = load_ensemble([row["checkpoint"]], "cpu", profile)
            tgt = find_patches(f["target"])
            s_stats = patch_stats(find_patches(f["source"]), profile, progress=False)
            row["model"] = _score(members, f["target"], s_stats, profile)
            row["own"] = _score(members, f["target"], patch_stats(tgt, profile, valid_only=True), profile)
            row["own_fill"] = _score(members, f["target"], patch_stats(tgt, profile), profile)
            continue
        out = run / f"refine_{row['strategy']}_{row['variant']}"
        s_stats, t_stats = BandStats.load(out / "source_stats.json"), BandStats.load(out / "target_stats.json")
        for r in row["rounds"]:
            summary = json.loads((out / f"round_{r['round']}" / "summary.json").read_text())
            members = load_ensemble(summary["models"], "cpu", profile)
            r["scores"] = _score(members, f["target"], t_stats if r["norm"] == "own" else s_stats, profile)
    tmp = args.json.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(args.json)


def _append(path: Path, row: dict) -> None:
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append(row)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(path)


def stage_source(args, f: dict, run: Path) -> dict:
    from lsmap.core.bands import get_profile
    from lsmap.data.stats import patch_stats
    from lsmap.io.patches import find_patches
    from lsmap.learn.ensemble import load_ensemble
    from lsmap.learn.train import TrainConfig, train

    t0 = time.monotonic()
    config = TrainConfig(model="tiny-unet", steps=args.steps, batch_size=8, scale=1.0, val_every=max(1, args.steps // 3),
                         seed=args.seed, device="cpu", loss="lovasz+ohem", amp=False)
    # No labelled split to spare: the checkpoint is chosen on the source itself (as bench/refine_l4s.py).
    res = train(run / "source_model", train_dir=f["source"], val_dir=f["source"], config=config, bands=f["bands"],
                progress=False, overwrite=True)
    profile = get_profile(f["bands"])
    members = load_ensemble([res.best_path], "cpu", profile)
    s_stats = patch_stats(find_patches(f["source"]), profile, progress=False)
    tgt = find_patches(f["target"])
    t_valid = patch_stats(tgt, profile, valid_only=True, progress=False)  # what refine uses now
    t_fill = patch_stats(tgt, profile, progress=False)  # nodata fill counted (refine before issue 16)
    return {"checkpoint": str(res.best_path), "seconds": round(time.monotonic() - t0, 1),
            "model": _score(members, f["target"], s_stats, profile), "own": _score(members, f["target"], t_valid, profile),
            "own_fill": _score(members, f["target"], t_fill, profile)}


def stage_refine(args, f: dict, run: Path) -> dict:
    from lsmap.core.bands import get_profile
    from lsmap.core.normalize import BandStats
    from lsmap.errors import LsmapWarning
    from lsmap.learn.ensemble import load_ensemble
    from lsmap.learn.refine.rounds import RefineConfig, refine

    src = run / "source_model" / "best.safetensors"
    if not src.exists():
        raise SystemExit(f"{src}: run --stage source for this case and seed first")
    t0 = time.monotonic()
    rc = RefineConfig(strategy=args.strategy, rounds=args.rounds, steps=args.round_steps, batch_size=8, device="cpu",
                      seed=args.seed, amp=False, **VARIANTS[args.variant])
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("always", LsmapWarning)
        res = refine([str(src)], f["source"], f["target"], run / f"refine_{args.strategy}_{args.variant}", rc,
                     overwrite=True, progress=False)
    warns = [str(w.message) for w in caught if issubclass(w.category, LsmapWarning)]
    profile = get_profile(f["bands"])
    out = run / f"refine_{args.strategy}_{args.variant}"
    s_stats, t_stats = BandStats.load(out / "source_stats.json"), BandStats.load(out / "target_stats.json")
    rounds = []
    for r in res.rounds:
        members = load_ensemble(r["models"], "cpu", profile)
        norm = r.get("norm", {}).get("chosen", "own")
        rounds.append({"round": r["round"], "norm": norm, "kept": r["kept"], "guard": r.get("guard"),
                       "models_kept": r.get("models_kept", False), "norm_record": r.get("norm"),
                       "proxies": r.get("proxies"), "target_f1_refine": r.get("target_f1_after"),
                       "scores": _score(members, f["target"], t_stats if norm == "own" else s_stats, profile)})
    return {"rounds": rounds, "warnings": warns, "seconds": round(time.monotonic() - t0, 1)}


def _fmt(rows: list[dict], key) -> str:
    vals = [key(r) for r in rows]
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{np.mean(vals):.3f}"


#: How refine's closing warning (``lsmap.learn.refine.rounds.final_caution``) begins.
FINAL_CAUTION = ("the refined models score below the given models", "the target has no labels")


def _warn_cell(runs: dict, sources: dict) -> str:
    """Warnings of the runs (count over seeds), and each seed whose last round ends below its source model
    (same normalisation), with whether the run said so in its closing warning."""
    count = sum(len(r["warnings"]) for r in runs.values())
    below = []
    for seed, r in sorted(runs.items()):
        last = r["rounds"][-1]
        if last["scores"]["f1"] < sources[seed][last["norm"]]["f1"]:
            said = any(w.startswith(FINAL_CAUTION) for w in r["warnings"])
            below.append(f"s{seed} {'cautioned' if said else 'NOT cautioned'}")
    return f"{count}" + (f"; below source: {', '.join(below)}" if below else "")


def table(path: Path) -> str:
    rows = json.loads(path.read_text())
    out = []
    for case in CASES:
        src = {r["seed"]: r for r in rows if r["case"] == case and r["stage"] == "source"}
        if not src:
            continue
        seeds = sorted(src)
        out.append(f"\n**{case}** (seeds {', '.join(map(str, seeds))}; means over seeds of F1, precision, recall, "
                   f"predicted landslide share of the valid target pixels, ROC AUC)\n")
        out.append("| model | F1 | P | R | share | AUC | per seed F1 | warnings |")
        out.append("|---|---|---|---|---|---|---|---|")
        for norm in ("model", "own", "own_fill"):
            rs = [src[s] for s in seeds]
            label = {"model": "source statistics", "own": "target's own statistics",
                     "own_fill": "target's own, nodata fill counted"}[norm]
            out.append(f"| source model, {label} | " + " | ".join(
                _fmt(rs, lambda r, k=k, n=norm: r[n].get(k)) for k in ("f1", "precision", "recall", "pred_share", "auc"))
                + " | " + ", ".join(f"{r[norm]['f1']:.3f}" for r in rs) + " | |")
        combos = sorted({(r["strategy"], r["variant"]) for r in rows if r["case"] == case and r["stage"] == "refine"})
        for strategy, variant in combos:
            rs = {r["seed"]: r for r in rows if r["case"] == case and r["stage"] == "refine"
                  and r["strategy"] == strategy and r["variant"] == variant}
            n_rounds = max(len(r["rounds"]) for r in rs.values())
            for i in range(n_rounds):
                per = [r["rounds"][min(i, len(r["rounds"]) - 1)] for r in rs.values()]
                norms = "/".join(sorted({p["norm"] for p in per}))
                warn = _warn_cell(rs, src) if i == n_rounds - 1 else ""
                out.append(f"| {strategy} ({variant}), round {i + 1}, norm {norms} | " + " | ".join(
                    _fmt(per, lambda p, k=k: p["scores"].get(k)) for k in ("f1", "precision", "recall", "pred_share", "auc"))
                    + " | " + ", ".join(f"{p['scores']['f1']:.3f}" for p in per) + f" | {warn} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=CASES, default="rgbn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", choices=("source", "refine"), default="source")
    ap.add_argument("--strategy", default="threshold", help="threshold, uncertainty, or both comma-separated")
    ap.add_argument("--variant", default="new", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=150, help="source training steps")
    ap.add_argument("--round-steps", type=int, default=40, help="training steps per refinement round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lsmap_cross_region"), help="data folders and runs")
    ap.add_argument("--json", type=Path, default=Path("/tmp/lsmap_cross_region/results.json"))
    ap.add_argument("--table", action="store_true", help="print the markdown table of --json and exit")
    ap.add_argument("--rescore", action="store_true", help="recompute the scores of every row of --json and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.json))
        return 0
    if not (L4S / "train").is_dir() or not SCENE.is_dir():
        print(f"skipped: real data not available under {SHARED}")
        return 0
    import torch

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", category=UserWarning)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.rescore:
        rescore(args)
        return 0
    f = folders(args.case, args.seed, args.work)
    run = args.work / f"{args.case}_s{args.seed}"
    if args.stage == "source":
        row = {"case": args.case, "seed": args.seed, "stage": args.stage, "steps": args.steps,
               **stage_source(args, f, run)}
        _append(args.json, row)
        print(json.dumps(row, default=str)[:2000])
        return 0
    for strategy in args.strategy.split(","):
        for variant in args.variant.split(","):
            if variant not in VARIANTS or strategy not in ("threshold", "uncertainty"):
                raise SystemExit(f"unknown strategy '{strategy}' or variant '{variant}'")
            one = argparse.Namespace(**(vars(args) | {"strategy": strategy, "variant": variant}))
            row = {"case": args.case, "seed": args.seed, "stage": "refine", "strategy": strategy, "variant": variant,
                   "round_steps": args.round_steps, **stage_refine(one, f, run)}
            _append(args.json, row)
            print(f"{args.case} seed {args.seed} {strategy} ({variant}), {row['seconds']} s: "
                  + ", ".join(f"round {r['round']} F1 {r['scores']['f1']:.3f} norm {r['norm']}"
                              f"{' (stopped)' if r['models_kept'] else ''}" for r in row["rounds"])
                  + "".join(f"\n  warning: {w}" for w in row["warnings"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
