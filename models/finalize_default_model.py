"""Write the refined checkpoint as lsmap's default model, with an honest model card.

Usage: python models/finalize_default_model.py FINAL EVAL_BEFORE.json EVAL_AFTER.json OUT_STEM [half [UNREFINED]]
(called by models/train_default_model.sh). ``half``: store the weights as float16 (half the size;
they are cast back to float32 when loaded; ``-`` for float32). ``UNREFINED``: the checkpoint before
refinement, shipped instead of FINAL when refinement lowered the held-out F1 (the card says so).
"""

from __future__ import annotations

import json
import sys

from lsmap.learn.models import load_checkpoint, save_checkpoint

DATA = (
    "Landslide4Sense 2022 (Ghorbanzadeh et al., IEEE TGRS 2022): only 12 labelled 128x128 training "
    "patches (ids 1, 2, 3, 27, 28, 38, 40, 253, 512, 525, 800, 902) of the 3799 in the benchmark, "
    "3 held out for checkpoint choice and scoring (ids 16, 461, 600), and 19 unlabelled patches "
    "(14 from the test/validation release, 5 of unknown split) for 2 rounds of self-training with "
    "threshold pseudo labels. A demonstration model: it saw a handful of patches from a few regions, "
    "and its validation scores come from 3 patches; retrain on the full benchmark for real use."
)


def _pixel(path: str) -> dict:
    res = json.loads(open(path).read())
    px = res.get("pixel", res)
    return {k: px[k] for k in ("precision", "recall", "f1", "iou") if k in px}


def main(final: str, before: str, after: str, out: str, half: str = "", unrefined: str = "") -> None:
    keep_unrefined = bool(unrefined) and _pixel(before)["f1"] > _pixel(after)["f1"]
    module, card = load_checkpoint(unrefined if keep_unrefined else final)
    if half and half != "-":
        module = module.half()  # floating-point tensors only; counters stay int64
    card.data = DATA
    if keep_unrefined:
        card.data += (" Refinement lowered the held-out F1, so the checkpoint before refinement is shipped "
                      "(its scores are val3_*; the refined model's are val3_*_refined).")
        card.metrics = {
            **{f"val3_{k}": v for k, v in _pixel(before).items()},
            **{f"val3_{k}_before_refine": v for k, v in _pixel(before).items()},
            **{f"val3_{k}_refined": v for k, v in _pixel(after).items()},
        }
    else:
        card.metrics = {
            **{f"val3_{k}": v for k, v in _pixel(after).items()},
            **{f"val3_{k}_before_refine": v for k, v in _pixel(before).items()},
        }
    card.metrics["val3_note"] = "landslide-class pixel scores summed over the 3 held-out patches (16, 461, 600)"
    save_checkpoint(out, module, card, overwrite=True)
    print(f"default model -> {out}.safetensors: F1 {card.metrics.get('val3_f1', float('nan')):.4f} "
          f"(before refinement {card.metrics.get('val3_f1_before_refine', float('nan')):.4f})")


if __name__ == "__main__":
    main(*sys.argv[1:7])
