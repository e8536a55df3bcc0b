#!/usr/bin/env bash
# Retrain lsmap's default model (lsmap/weights/l4s14-default.*) with lsmap's own commands.
#
#   bash models/train_default_model.sh [WORK_DIR]      (default WORK_DIR: runs/default-model)
#
# The model goes to WORK_DIR/l4s14-default.{safetensors,json} (LSMAP_DEFAULT_OUT=STEM: elsewhere);
# the tracked shipped weights lsmap/weights/l4s14-default.* are rewritten only with
# LSMAP_WRITE_SHIPPED=1 (an explicit choice: compare the new card with the shipped one first).
# LSMAP=CMD runs lsmap another way (default: the lsmap of .venv/bin when there is one).
# LSMAP_BANDS=SET trains on that band set, taken by name from the 14-band patches (default l4s14;
# the model is then <SET>-default): the shipped defaults for real products are LSMAP_BANDS=l2a-terrain
# and LSMAP_BANDS=l2a. LSMAP_HALF=1 stores the weights in float16 (scored again below).
# LSMAP_KEEP_BETTER=1 ships the checkpoint before refinement when refinement lowered the held-out F1.
# LSMAP_NORM=global trains with one global normalisation (the training statistics for every domain;
# detection's --norm auto then uses them) instead of the default separated normalisation.
#
# Data: the real Landslide4Sense patches in ../shared/data/l4s (override with LSMAP_L4S=DIR):
# 15 labelled training patches (12 train, 3 held out for validation: ids 16, 461, 600) and
# 19 unlabelled patches (test/ and unknown_split/) as the self-training target.
# Steps: train a tiny U-Net with the recipe, refine it for 2 rounds of progressive pseudo labels
# on the unlabelled patches (checkpoints chosen on the 3 validation patches), score it on them,
# then write the weights + card into lsmap/weights/. Same seed, same data: same metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
L4S=${LSMAP_L4S:-../shared/data/l4s}
WORK=${1:-runs/default-model}
if [ -x .venv/bin/lsmap ]; then LSMAP=${LSMAP:-.venv/bin/lsmap}; PYTHON=${PYTHON:-.venv/bin/python}; fi
LSMAP=${LSMAP:-lsmap}
PYTHON=${PYTHON:-python}
BANDS=${LSMAP_BANDS:-l4s14}
NORM=${LSMAP_NORM:-separated}
if [ "${LSMAP_WRITE_SHIPPED:-0}" = 1 ]; then OUT=lsmap/weights/$BANDS-default; else OUT=${LSMAP_DEFAULT_OUT:-$WORK/$BANDS-default}; fi
export HF_HUB_OFFLINE=1 PYTHONHASHSEED=0

[ -d "$L4S/train/img" ] || { echo "error: $L4S/train/img not found; set LSMAP_L4S to the L4S patch folder" >&2; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"/split/{train,val}/{img,mask} "$WORK"/split/unlabelled/img
L4S=$(cd "$L4S" && pwd)
for img in "$L4S"/train/img/image_*.h5; do
  id=$(basename "$img" .h5); id=${id#image_}
  case " 16 461 600 " in *" $id "*) part=val ;; *) part=train ;; esac
  ln -s "$img" "$WORK/split/$part/img/image_$id.h5"
  ln -s "$L4S/train/mask/mask_$id.h5" "$WORK/split/$part/mask/mask_$id.h5"
done
# unlabelled target: unique ids (unknown_split's 4.h5 and image_4.h5 would collide)
for img in "$L4S"/test/img/*.h5; do ln -s "$img" "$WORK/split/unlabelled/img/image_t$(basename "$img" .h5 | sed 's/^image_//').h5"; done
for img in "$L4S"/unknown_split/img/*.h5; do ln -s "$img" "$WORK/split/unlabelled/img/image_u$(basename "$img" .h5 | sed 's/^image_/i/').h5"; done

$LSMAP train --train "$WORK/split/train" --val "$WORK/split/val" --model tiny-unet --scale 1 --bands "$BANDS" \
    --loss lovasz+ohem --norm "$NORM" --steps 1500 --batch-size 8 --val-every 100 --device cpu --seed 0 -o "$WORK/train"
$LSMAP refine --model "$WORK/train/best.safetensors" --source "$WORK/split/train" \
    --target "$WORK/split/unlabelled" --val "$WORK/split/val" --strategy threshold --rounds 2 \
    --steps 300 --device cpu --seed 0 -o "$WORK/refine"
$LSMAP evaluate "$WORK/train/best.safetensors" --data "$WORK/split/val" --device cpu --json \
    > "$WORK/eval_train_only.json"
FINAL=$(ls "$WORK"/refine/round_2/models/*/best.safetensors 2>/dev/null | head -1 || true)
[ -n "$FINAL" ] || FINAL=$(ls "$WORK"/refine/round_2/models/*/*.safetensors | head -1)
$LSMAP evaluate "$FINAL" --data "$WORK/split/val" --device cpu --json > "$WORK/eval_refined.json"
EXTRA=(); [ -z "${LSMAP_HALF:-}" ] || EXTRA=(half)  # float16 weights
[ -z "${LSMAP_KEEP_BETTER:-}" ] || EXTRA=("${EXTRA[0]:--}" "$WORK/train/best.safetensors")
"$PYTHON" models/finalize_default_model.py "$FINAL" "$WORK/eval_train_only.json" "$WORK/eval_refined.json" \
    "$OUT" "${EXTRA[@]}"
if [ -n "${LSMAP_HALF:-}" ]; then  # the stored (float16) weights, scored as shipped
  $LSMAP evaluate "$OUT" --data "$WORK/split/val" --device cpu --json > "$WORK/eval_stored.json"
fi
[ "$OUT" = "lsmap/weights/$BANDS-default" ] || echo "not the shipped weights; to replace them: LSMAP_WRITE_SHIPPED=1 bash $0"
