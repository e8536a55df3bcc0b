"""Pure: the numbers every stage must agree on, defined once.

Masks, patches, the model's input geometry and the sliding-window defaults are shared by tiling,
training, evaluation, refinement and detection; each is named here and imported everywhere else.
"""

from __future__ import annotations

#: Mask value of unlabelled / ignored pixels (Landslide4Sense masks, pseudo labels, losses, metrics).
IGNORE_INDEX = 255

#: L4S-scale value written into nodata and padding pixels of patches (``lsmap tile``), and put
#: in place of non-finite values read from patches.
FILL = 0.0

#: Sentinel-2's special digital number for a saturated pixel (the products' ``Special_Values``: NODATA 0,
#: SATURATED 65535): its reflectance is unknown, so ``lsmap stack`` takes it as not observed.
S2_SATURATED = 65535

#: Side of a Landslide4Sense patch in pixels (``lsmap tile`` default, the benchmark's patch size).
PATCH_SIZE = 128

#: Models see inputs padded to a multiple of this (five stride-2 stages of the U-Net encoders).
PAD_MULTIPLE = 32

#: Sliding-window defaults of detection: window side and overlap of neighbouring windows, pixels.
WINDOW = 128
OVERLAP = 32
#: Detection's window for fully convolutional models (:func:`lsmap.map.stream.auto_window`): 512 px
#: change 0.006-0.02 % of the mask pixels and no F1 against 128 (bench/window_size.py) and cut the
#: overlap's extra work from (128/96)^2 = 1.78x to (512/480)^2 = 1.14x.
LARGE_WINDOW = 512
#: The large windows detection chooses among for a scene (multiples of :data:`PAD_MULTIPLE`): the one
#: whose grid makes the model compute the fewest pixels (a 4096^2 scene: 544 px, 1.13x its pixels,
#: against 1.27x with 512). At most :data:`LARGE_WINDOW` for scale-promoted models (their activations
#: grow with the square of the scaled window).
LARGE_WINDOWS = tuple(range(384, 641, PAD_MULTIPLE))

#: Scale-promotion factors offered by ``lsmap train`` (the 1st place trained at x2.5 and x4).
SCALES = (1.0, 2.5, 4.0)

#: Dataset splits of the Landslide4Sense layouts.
SPLITS = ("train", "validation", "test")

#: Evidence defaults of detection with a pre-event scene (:mod:`lsmap.map.evidence`; measured,
#: see docs/evidence.md): the smallest mean NDVI drop of a kept polygon, and its smallest mean
#: slope in degrees.
MIN_NDVI_DROP = 0.15
MIN_SLOPE = 10.0

#: Encodings ``lsmap stack`` can write (:mod:`lsmap.core.encoding`); the first is the default.
STACK_ENCODINGS: tuple[str, ...] = ("uint16", "float32")
