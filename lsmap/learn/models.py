"""Models: built from the registry (:mod:`lsmap.learn.registry`), model cards and checkpoints.

A checkpoint is two files side by side: ``NAME.safetensors`` (the weights; loading never
unpickles) and ``NAME.json`` (the model card: architecture, the names of its input bands in
order, normalisation statistics, input scale, threshold, training configuration, metrics, lsmap
version; cards written before band names were stored hold a band-profile dict, read the same way). The card is
also embedded in the safetensors metadata, so the weights file alone is enough to load a model.

Every model maps ``(N, C, H, W)`` normalised inputs to ``(N, 2, H, W)`` logits (background,
landslide).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsmap import __version__
from lsmap.core.bands import BandProfile, canonical_band, get_profile, profile_from_dict
from lsmap.core.normalize import BandStats
from lsmap.errors import CheckpointError, InputError, MissingInputError
from lsmap.io.rasters import atomic_output
from lsmap.learn.registry import MODELS, ModelSpec, get_spec  # noqa: F401 (MODELS, ModelSpec: their home before)

NUM_CLASSES = 2
#: Name of the model shipped in the package (``lsmap/weights/``) for 14-band L4S stacks.
DEFAULT_MODEL = "l4s14-default"
#: Short name of :data:`DEFAULT_MODEL` wherever a checkpoint is asked for (``--model default``).
DEFAULT_ALIAS = "default"
#: Folder of the shipped models: each ``NAME.safetensors`` (+ ``NAME.json``) is a model called ``NAME``.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: The models shipped in the package, fullest band set first: without ``--model``, detection takes
#: the first whose bands the scene has (L4S 14 bands; L2A/L1C bands + terrain; spectral bands only).
DEFAULT_MODELS = ("l4s14-default", "l2a-terrain-default", "l2a-default")


def build_model(name: str, in_channels: int, classes: int = NUM_CLASSES, encoder_weights: str | os.PathLike | None = None):
    """Build registered model ``name`` for ``in_channels`` input bands.

    Without ``encoder_weights`` every weight starts random.

    Args:
        name: Registry name (see :data:`MODELS`).
        in_channels: Number of input bands.
        classes: Output classes (2: background, landslide).
        encoder_weights: Optional local weights file (safetensors, or a torch state dict loaded with
            ``weights_only=True``) for the encoder; tensors whose shapes do not fit (e.g. a 3-band
            first convolution) are skipped. ``"imagenet"``: the encoder's published ImageNet
            weights (:func:`load_published_encoder`: downloaded once into the Hugging Face cache).

    Raises:
        InputError: unknown name, unusable weights file, or published weights out of reach.
    """
    module = get_spec(name).build(in_channels, classes)
    if encoder_weights == PUBLISHED_WEIGHTS:
        load_published_encoder(module, name)
    elif encoder_weights is not None:
        target = getattr(module, "encoder", module)
        state = read_state_dict(encoder_weights)
        own = target.state_dict()
        fit = {k.removeprefix("encoder."): v for k, v in state.items()
               if k.removeprefix("encoder.") in own and own[k.removeprefix("encoder.")].shape == v.shape}
        if not fit:
            raise InputError(f"{encoder_weights}: no tensor fits the {name} encoder; check the file")
        target.load_state_dict(fit, strict=False)
    return module


#: ``encoder_weights`` value that asks for the encoder's published ImageNet weights.
PUBLISHED_WEIGHTS = "imagenet"
#: Seconds to wait for the Hugging Face Hub before published weights count as out of reach.
HUB_TIMEOUT_S = 5.0


def _hub_reachable(endpoint: str, timeout: float) -> bool:
    """Whether a TCP connection to ``endpoint``'s host opens within ``timeout`` (or a proxy is set)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy decides; huggingface_hub's own timeouts apply
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def published_encoder_file(encoder: str) -> Path:
    """Local path of ``encoder``'s published ImageNet weights (downloaded into the Hugging Face cache).

    Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable within :data:`HUB_TIMEOUT_S`) only
    the cache is used, so this fails within seconds rather than retrying for minutes.

    Raises:
        InputError: no published weights for ``encoder``, or they are neither cached nor reachable.
    """
    from huggingface_hub import constants, hf_hub_download
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get(PUBLISHED_WEIGHTS)
    if settings is None:
        raise InputError(f"--encoder-weights imagenet: encoder '{encoder}' has no published ImageNet weights; "
                         f"pass --encoder-weights FILE")
    offline = bool(constants.HF_HUB_OFFLINE) or not _hub_reachable(constants.ENDPOINT, HUB_TIMEOUT_S)
    try:
        return Path(hf_hub_download(settings["repo_id"], "model.safetensors", revision=settings["revision"],
                                    local_files_only=offline, etag_timeout=HUB_TIMEOUT_S))
    except Exception as e:  # huggingface_hub raises many types (offline, HTTP, disk)
        why = "offline and not in the cache" if offline else str(e).strip().splitlines()[0]
        raise InputError(f"--encoder-weights imagenet: cannot get the published weights of encoder '{encoder}' "
                         f"(https://huggingface.co/{settings['repo_id']}: {why}); download model.safetensors from "
                         f"there on a machine with internet access and pass --encoder-weights FILE") from None


def load_published_encoder(module, name: str) -> None:
    """Load the published ImageNet weights into ``module``'s encoder (model ``name``).

    A first convolution with another number of input bands gets the RGB filters cycled over the
    bands and scaled by ``3 / bands``, as segmentation-models-pytorch does.

    Raises:
        InputError: the model has no published encoder, or the weights are out of reach
            (:func:`published_encoder_file`) or do not fit.
    """
    spec = get_spec(name)
    if spec.encoder is None:
        raise InputError(f"--encoder-weights imagenet: model '{name}' has no published encoder weights; "
                         f"choose a U-Net/DeepLabV3+/SegFormer model or pass --encoder-weights FILE")
    path = published_encoder_file(spec.encoder)
    state = read_state_dict(path)
    encoder = module.encoder
    own = encoder.state_dict()
    for k, v in list(state.items()):
        if k in own and v.ndim == 4 and own[k].shape[1] != v.shape[1] and own[k].shape[0] == v.shape[0]:
            bands, rgb = own[k].shape[1], v.shape[1]
            state[k] = v[:, [i % rgb for i in range(bands)]] * (rgb / bands)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path}: published weights do not fit the {name} encoder "
                         f"({str(e).splitlines()[0]})") from None


def _is_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file, by its name (any case) or its first bytes.

    A safetensors file starts with the length of its JSON header (8 bytes, little-endian) and the header's ``{``;
    torch's files start with a zip or pickle signature.
    """
    if path.suffix.lower() == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def check_weights_file(path: str | os.PathLike) -> None:
    """Refuse a safetensors weights file whose header cannot be read or does not fit the file (garbage, a truncated
    copy), without reading its tensors: ``lsmap info`` showed the card of such a checkpoint as if it were sound
    (the re-audit), while detect and evaluate refused it.

    Raises:
        CheckpointError: the file cannot be read as safetensors.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises many types on corrupt files
        raise CheckpointError(f"{path}: cannot read weights ({_first_line(e)}); the card is there but the weights "
                              f"file is damaged: copy it again or retrain") from None


def read_state_dict(path: str | os.PathLike) -> dict:
    """Read tensors from a safetensors file or a torch file (``weights_only=True``, never unpickling)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: weights file does not exist")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            return _finite(load_file(str(path)), path)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises many types on corrupt files
        raise CheckpointError(f"{path}: cannot read weights ({_first_line(e)}); is it a safetensors file?") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch's text suggests unpickling (weights_only=False): never do that, never say it
        raise CheckpointError(f"{path}: not a safetensors or weights-only checkpoint (it cannot be read without "
                              f"running pickled code, which lsmap never does); save its tensors with "
                              f"safetensors") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a dict of tensors; save its state dict")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return _finite(state, path)


def nonfinite(state: dict) -> str | None:
    """The floating-point tensors of ``state`` holding NaN or infinite values, for a message (``"enc.weight and 3
    more"``), or ``None`` when there are none."""
    import torch

    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    return f"{bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}" if bad else None


def _finite(state: dict, path: Path) -> dict:
    """``state``, refused when a tensor holds NaN or inf: such a model scores every pixel as background, so a
    detection with it found nothing and said so with success (found by an audit)."""
    bad = nonfinite(state)
    if bad:
        raise CheckpointError(f"{path}: weights hold NaN or infinite values ({bad}): the training that wrote "
                              f"them diverged; train again (a lower learning rate) or use another checkpoint")
    return state


@dataclass
class ModelCard:
    """What a trained model is, how its inputs must be prepared, and how well it did.

    Attributes:
        model: Registry name of the architecture.
        bands: Names of the model's input bands, in order (e.g. ``["B4", "B3", "B2", "B8"]``); a
            band-profile dict or a :class:`BandProfile` given here (older cards) becomes its names.
        stats: Per-band statistics of the training (source) data, used with ``--norm model``.
        scale: Scale promotion factor: inputs are upsampled by it before the network.
        threshold: Probability above which a pixel is a landslide.
        domain_bn: Whether batch norms keep per-domain statistics (0 source, 1 target).
        train: Training configuration (free-form, JSON).
        metrics: Validation metrics of the chosen checkpoint (free-form, JSON).
        data: Description of the training data.
        trained_on: The labelled patches the weights were fitted to, ``{image folder: [ids]}``
            (:func:`lsmap.io.patches.patch_keys`; held-out validation patches are not in it, nor the
            target patches refine trained on with pseudo labels): evaluate warns when it scores any of them.
        adapted_on: The patches whose images, not labels, the weights were adapted to, ``{image folder: [ids]}``:
            refine's pseudo-labelled target patches, and the target patches of training with domain batch norms.
            Scoring them is the benchmark's transductive protocol (self-training on the test images); evaluate
            counts them.
        trained_digests: The content digests of the ``trained_on`` patches' images
            (:func:`lsmap.io.patches.patch_digests`), by which evaluate recognises them in a copy or a folder
            mounted elsewhere too; empty in cards written before lsmap recorded them (their patches are then
            recognised by folder and id only).
        adapted_digests: The same of the ``adapted_on`` patches.
        lsmap_version: lsmap version that wrote the card.
        created: UTC timestamp (ISO 8601).
    """

    model: str
    bands: list
    stats: dict | None = None
    scale: float = 1.0
    threshold: float = 0.5
    domain_bn: bool = False
    train: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    data: str = ""
    trained_on: dict = field(default_factory=dict)
    adapted_on: dict = field(default_factory=dict)
    trained_digests: list = field(default_factory=list)
    adapted_digests: list = field(default_factory=list)
    lsmap_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if isinstance(self.bands, BandProfile):
            self.bands = list(self.bands.bands)
        elif isinstance(self.bands, dict):  # cards before band names: a band-profile dict
            self.bands = [str(b) for b in self.bands.get("bands", [])]
        else:
            self.bands = [str(b) for b in self.bands]

    @property
    def profile(self) -> BandProfile:
        """The band set as an object (the registered profile when one has exactly these bands)."""
        try:
            return profile_from_dict(self.bands)
        except InputError as e:
            raise CheckpointError(f"model card names bands {self.bands}: {e}") from None

    @property
    def band_stats(self) -> BandStats | None:
        """Training statistics as an object."""
        return BandStats.from_dict(self.stats) if self.stats else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: object = "model card") -> ModelCard:
        """A card from its JSON form, checked against the schema (:func:`check_card`)."""
        check_card(d, source)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: Largest scale promotion a card may ask for (the winners used x1, x2.5, x4).
MAX_CARD_SCALE = 8.0


def _number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_card(d: Any, source: object = "model card") -> None:
    """Check a model card's JSON against the schema; one line naming the card and the field.

    Raises:
        CheckpointError: not an object, a missing or mistyped field, a value out of range
            (threshold outside [0, 1], scale not in (0, 8], zero divisors, unknown band names,
            statistics that are not finite or do not fit the bands).
    """
    from lsmap.core.bands import L4S_BANDS, S2_RESOLUTION

    def bad(field_name: str, why: str) -> CheckpointError:
        return CheckpointError(f"{source}: model card field '{field_name}' {why}; re-save the checkpoint with lsmap")

    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: model card is a JSON {type(d).__name__}, not an object; "
                              f"not an lsmap model card")
    if not isinstance(d.get("model"), str) or not d["model"]:
        raise bad("model", f"must be an architecture name (got {d.get('model')!r})")
    b = d.get("bands")
    known = set(L4S_BANDS) | set(S2_RESOLUTION)
    if isinstance(b, list):  # the band names, in order (cards since band sets by name)
        if not b or not all(isinstance(n, str) for n in b):
            raise bad("bands", "must be a non-empty list of band names")
        unknown = list(dict.fromkeys(n for n in b if n not in known))  # each once, in the card's order
        if unknown:
            raise bad("bands", f"names unknown bands {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if len(set(b)) != len(b):
            raise bad("bands", f"names a band twice ({', '.join(b)})")
        b = None
    elif not isinstance(b, dict):
        raise bad("bands", f"must be a list of band names or a band profile object (got {type(b).__name__})")
    if b is not None:  # an older card: a band-profile object
        _check_profile_dict(b, known, bad)
    st = d.get("stats")
    names = d["bands"] if isinstance(d["bands"], list) else d["bands"]["bands"]
    if isinstance(st, dict) and isinstance(st.get("mean"), list) and len(st["mean"]) != len(names):
        raise CheckpointError(f"{source}: model card field 'stats.mean' must have one value per band "
                              f"({len(names)}); re-save the checkpoint with lsmap")
    _check_rest(d, bad)


def _check_profile_dict(b: dict, known: set, bad) -> None:
    """The band-profile object of an older card (:func:`check_card`)."""
    names = b.get("bands")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("bands.bands", "must be a non-empty list of band names")
    unknown = list(dict.fromkeys(n for n in names if n not in known))
    if unknown:
        raise bad("bands.bands", f"names unknown bands {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    div = b.get("divisors")
    if not isinstance(div, list) or len(div) != len(names):
        raise bad("bands.divisors", f"must be a list of {len(names)} numbers, one per band")
    if not all(_number(x) and x != 0 for x in div):
        raise bad("bands.divisors", f"must be finite, non-zero numbers (got {div})")
    if not isinstance(b.get("name"), str):
        raise bad("bands.name", "must be a profile name")
    spectral = b.get("spectral", [])
    if not isinstance(spectral, list) or not set(spectral) <= set(names):
        raise bad("bands.spectral", "must list some of the card's bands")
    if b.get("nodata") is not None and not _number(b["nodata"]):
        raise bad("bands.nodata", f"must be a number or null (got {b['nodata']!r})")


def _check_rest(d: dict, bad) -> None:
    """Everything of :func:`check_card` after the bands."""
    scale = d.get("scale", 1.0)
    if not _number(scale) or not 0 < scale <= MAX_CARD_SCALE:
        raise bad("scale", f"must be a number in (0, {MAX_CARD_SCALE:g}] (got {scale!r})")
    thr = d.get("threshold", 0.5)
    if not _number(thr) or not 0 < thr < 1:  # as every command's `threshold`: 0 maps every pixel, 1 none
        raise bad("threshold", f"must be a number in (0, 1) (got {thr!r})")
    if not isinstance(d.get("domain_bn", False), bool):
        raise bad("domain_bn", f"must be true or false (got {d.get('domain_bn')!r})")
    st = d.get("stats")
    if st is not None:
        if not isinstance(st, dict):
            raise bad("stats", "must be an object with 'mean' and 'std' lists or null")
        for key in ("mean", "std"):
            v = st.get(key)
            if not isinstance(v, list) or not v or not all(_number(x) for x in v):
                raise bad(f"stats.{key}", "must be a list of finite numbers, one per band")
        if len(st["mean"]) != len(st["std"]):
            raise bad("stats.std", "must have as many values as 'stats.mean'")
        if any(x < 0 for x in st["std"]):
            raise bad("stats.std", "must not be negative")
    for key, typ in (("train", dict), ("metrics", dict), ("data", str), ("lsmap_version", str), ("created", str),
                     ("trained_on", dict), ("adapted_on", dict)):
        if key in d and not isinstance(d[key], typ):
            raise bad(key, f"must be a JSON {'object' if typ is dict else 'string'} (got {type(d[key]).__name__})")
    for key in ("trained_on", "adapted_on"):
        for folder, ids in d.get(key, {}).items():
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise bad(key, f"must map each folder to a list of patch ids (got {ids!r:.60} for {folder})")
    for key in ("trained_digests", "adapted_digests"):
        digests = d.get(key, [])
        if not isinstance(digests, list) or not all(isinstance(x, str) and _DIGEST.fullmatch(x) for x in digests):
            raise bad(key, f"must be a list of patch content digests, hex strings (got {digests!r:.60})")


#: A patch content digest (:func:`lsmap.io.patches.patch_digest`): hex digits.
_DIGEST = re.compile(r"[0-9a-f]{8,64}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, card)`` paths of a checkpoint named by its ``.safetensors``, ``.json`` or stem.

    Raises:
        CheckpointError: an empty path, or one without a name ('.', '/'): a folder, not a checkpoint.
    """
    from lsmap.core.checks import is_empty_path

    if is_empty_path(path):  # Path('') is '.', whose empty name was a ValueError traceback from with_name
        raise CheckpointError("`model` is an empty path; give a checkpoint (NAME.safetensors) or a shipped model's "
                              "name")
    path = Path(path)
    if not path.name:
        raise CheckpointError(f"{path}: is a folder; give a checkpoint (NAME.safetensors) inside it")
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(path: str | os.PathLike, module, card: ModelCard, overwrite: bool = True) -> Path:
    """Write ``module``'s weights and ``card`` atomically; returns the weights path."""
    from safetensors.torch import save_file


    weights, card_path = checkpoint_paths(path)
    text = json.dumps(card.to_dict(), indent=2, default=str)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    bad = nonfinite(state)
    if bad:  # it could not be loaded (read_state_dict refuses it), and would score every pixel as background
        raise CheckpointError(f"{weights}: not saved: the weights hold NaN or infinite values ({bad})")
    with atomic_output(weights, overwrite) as tmp:
        save_file(state, str(tmp), metadata={"lsmap_card": text})
    with atomic_output(card_path, overwrite=True) as tmp:
        tmp.write_text(text + "\n")
    return weights


def check_checkpoint_name(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, card)`` of the checkpoint the user named, with errors that name what was given.

    A shipped model's name (``default``, :func:`resolve_model`) names its files in the package.

    Raises:
        CheckpointError: ``path`` is an existing file that is not ``.safetensors``/``.json`` (a
            pickled ``.pth``/``.pt``/``.ckpt`` is never loaded).
        MissingInputError: neither ``NAME.safetensors`` nor ``NAME.json`` exists.
    """
    given = resolve_model(path)
    weights, card_path = checkpoint_paths(given)
    if given.suffix not in (".safetensors", ".json") and given.is_file() and not (weights.exists() or card_path.exists()):
        raise CheckpointError(f"{given}: not an lsmap checkpoint; lsmap loads NAME.safetensors (+ NAME.json) and "
                              f"never unpickles .pth/.pt files; convert the weights to safetensors")
    if given.is_dir():
        raise CheckpointError(f"{given}: is a folder; give a checkpoint (NAME.safetensors) inside it")
    if not weights.exists() and not card_path.exists():
        raise MissingInputError(f"{given}: checkpoint does not exist (no {weights.name} or {card_path.name} "
                                f"in {weights.parent})")
    return weights, card_path


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read a checkpoint's model card (from the JSON beside it, else the weights' metadata).

    ``path`` may name a shipped model (:func:`resolve_model`).

    Raises:
        MissingInputError: no such checkpoint.
        CheckpointError: unreadable, or a card that does not fit the schema (:func:`check_card`).
    """
    weights, card_path = check_checkpoint_name(path)
    try:
        if card_path.exists():
            return ModelCard.from_dict(json.loads(card_path.read_text()), card_path)
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        if "lsmap_card" not in meta:
            raise CheckpointError(f"{weights}: no model card (neither {card_path.name} nor embedded); not an lsmap checkpoint")
        return ModelCard.from_dict(json.loads(meta["lsmap_card"]), f"{weights} (embedded card)")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{card_path}: unreadable model card ({_first_line(e)})") from None
    except (MissingInputError, CheckpointError):
        raise
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{card_path}: unusable model card ({_first_line(e)})") from None
    except Exception as e:  # OSError, safetensors' own errors on a corrupt header
        raise CheckpointError(f"{weights}: unreadable checkpoint ({_first_line(e)})") from None


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu", expect: BandProfile | str | None = None):
    """Load a checkpoint as ``(module, card)``, module in eval mode on ``device``.

    Args:
        path: ``NAME.safetensors``, ``NAME.json`` or ``NAME``, or a shipped model's name (:func:`resolve_model`).
        device: Torch device for the module.
        expect: Band profile of the input the model will see; a different one is refused.

    Raises:
        MissingInputError: no such checkpoint.
        CheckpointError: unreadable, or trained on another band profile than ``expect``.
    """
    path = resolve_model(path)
    card = read_card(path)
    profile = card.profile
    if expect is not None:
        expect = get_profile(expect)
        if expect.bands != profile.bands:
            raise CheckpointError(
                f"{path}: model was trained on band profile '{profile.name}' ({profile.count} bands: "
                f"{', '.join(profile.bands)}) but the input is '{expect.name}' ({expect.count} bands); "
                f"use a model trained on '{expect.name}' or restack the input"
            )
    if card.model not in MODELS:
        raise CheckpointError(f"{path}: model card field 'model' names unknown architecture '{card.model}'; "
                              f"known: {', '.join(MODELS)}")
    weights, _ = checkpoint_paths(path)
    state = read_state_dict(weights)
    try:
        module = _load_weights(card, state)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not fit model '{card.model}' ({str(e).splitlines()[0]})") from None
    return module.to(device).eval(), card


def _build_for_card(card: ModelCard, meta: bool = False):
    """The card's model, its weights uninitialised (on the ``meta`` device) when ``meta``."""
    import contextlib

    import torch

    with torch.device("meta") if meta else contextlib.nullcontext():
        module = build_model(card.model, card.profile.count)
        if card.domain_bn:
            from lsmap.learn.domain_bn import convert_domain_bn

            convert_domain_bn(module)
    return module


def _load_weights(card: ModelCard, state: dict):
    """The card's model holding ``state`` (strictly: every tensor, each of its shape and the model's dtype).

    The model is built on the ``meta`` device and takes the state's tensors as they are
    (``load_state_dict(assign=True)``): its random initialisation, about to be overwritten, would be most of
    the load (a ResNet-18 U-Net: 0.28 of 0.30 s, measured: BENCHMARKS.md), and no second copy of the
    weights is made. A model that keeps a tensor outside its state dict (left on ``meta``) is built and
    loaded the usual way, as is one that cannot be built there (one whose construction reads its tensors'
    values: SegFormer's encoder).

    Raises:
        RuntimeError: the state does not fit the model (``load_state_dict``'s message).
    """
    import itertools

    try:
        module = _build_for_card(card, meta=True)
    except Exception:  # noqa: BLE001 - built the usual way below, where a real error shows itself
        module = None
    if module is not None:
        dtypes = {k: v.dtype for k, v in module.state_dict().items()}
        module.load_state_dict({k: v.to(dtypes[k]) if k in dtypes and v.dtype != dtypes[k] else v
                                for k, v in state.items()}, assign=True)
        if not any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers())):
            return module
    module = _build_for_card(card)
    module.load_state_dict(state)
    return module


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the shipped model ``name`` (one of :data:`DEFAULT_MODELS`; default: the 14-band one).

    Raises:
        MissingInputError: the package was installed without its weights.
    """
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.exists():
        raise MissingInputError(f"{path}: the default model is not installed; pass `model` PATH or reinstall lsmap")
    return path


def shipped_models() -> dict[str, Path]:
    """The models shipped in :data:`WEIGHTS_DIR`, by name (``{DEFAULT_ALIAS}`` included when installed)."""
    found = {p.name.removesuffix(".safetensors"): p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}
    if DEFAULT_MODEL in found:
        found = {DEFAULT_ALIAS: found[DEFAULT_MODEL], **found}
    return found


def resolve_model(model: str | os.PathLike) -> Path:
    """The checkpoint ``model`` names: a path (``.safetensors``, ``.json`` or stem), or a shipped model's name.

    An existing checkpoint path wins over a shipped name; ``default`` is the default model.

    Raises:
        MissingInputError: neither a checkpoint nor a shipped model; the message lists the shipped ones.
        CheckpointError: an empty path.
    """
    weights, card = checkpoint_paths(model)  # an empty path is refused here, before Path('') becomes '.'
    path = Path(model)
    if weights.exists() or card.exists() or path.exists():
        return path
    if len(path.parts) == 1:
        shipped = shipped_models()
        if path.name in shipped:
            return shipped[path.name]
        if path.suffix not in (".safetensors", ".json"):
            raise MissingInputError(f"{model}: no such checkpoint or shipped model; give a .safetensors path or one "
                                    f"of the shipped models: {', '.join(shipped) or 'none installed'}")
    return path


def shipped_defaults() -> list[Path]:
    """The installed models of :data:`DEFAULT_MODELS`, in that order."""
    return [p for p in (WEIGHTS_DIR / f"{n}.safetensors" for n in DEFAULT_MODELS) if p.exists()]


def default_model_for(bands: Sequence[str], source: object = "the scene",
                      fix: str = "restack with more bands or pass `model`") -> Path:
    """The first shipped model (:data:`DEFAULT_MODELS` order) whose bands are all among ``bands``.

    Args:
        bands: The band names the input has.
        source: The input, for the message.
        fix: What the message tells the user to do when no model fits.

    Raises:
        MissingInputError: no shipped model is installed.
        CheckpointError: no shipped model fits; the message says what each needs.
    """
    installed = shipped_defaults()
    if not installed:
        default_model_path()  # raises the "not installed" error
    have = {canonical_band(b) or b for b in bands}
    needs = []
    for path in installed:
        card = read_card(path)
        missing = [b for b in card.bands if b not in have]
        if not missing:
            return path
        needs.append(f"{path.stem} lacks {', '.join(missing)}")
    raise CheckpointError(f"{source}: no shipped model fits its bands ({', '.join(bands)}): {'; '.join(needs)}; "
                          f"{fix}")


def _describe_training(train: dict) -> str:
    """One line of what a card's ``train`` record says: what decides how detect normalises (``norm``), the loss and
    the optimisation."""
    from lsmap.core.norms import trained_norm

    used = {**train, **(train.get("effective") or {})}
    parts = [f"norm {trained_norm(train)}"]
    parts += [f"{label} {used[k]:g}" if isinstance(used.get(k), float) else f"{label} {used[k]}"
              for k, label in (("loss", "loss"), ("steps", "steps"), ("batch_size", "batch"), ("optimizer", "optimizer"),
                               ("lr", "lr"), ("weight_decay", "weight decay"), ("seed", "seed"))
              if used.get(k) is not None]
    if train.get("refine"):
        parts.append(f"refine round {train['refine'].get('round', '?')} ({train['refine'].get('strategy', '?')})")
    return ", ".join(parts)


def describe_card(card: ModelCard) -> list[tuple[str, str]]:
    """Human-readable ``(field, value)`` rows of a model card (for ``lsmap info``)."""
    p = card.profile
    rows = [
        ("model", f"{card.model} ({get_spec(card.model).description})" if card.model in MODELS else card.model),
        ("bands", f"{p.name}: {', '.join(p.bands)}" if p.name != ",".join(p.bands) else ", ".join(p.bands)),
        ("input scale", f"x{card.scale:g}"),
        ("threshold", f"{card.threshold:g}"),
        ("domain batch norm", "yes" if card.domain_bn else "no"),
        ("normalisation stats", f"{card.stats.get('count', 0):,} pixels" if card.stats else "none"),
        ("training data", card.data or "-"),
    ]
    if card.train:
        rows.append(("training", _describe_training(card.train)))
    rows += [("trained on", f"{len(ids)} patches of {folder}") for folder, ids in card.trained_on.items()]
    rows += [("adapted on", f"{len(ids)} patches of {folder} (images, no labels)")
             for folder, ids in card.adapted_on.items()]
    if card.trained_digests or card.adapted_digests:
        rows.append(("content digests", f"{len(card.trained_digests)} trained on, {len(card.adapted_digests)} adapted "
                                        f"on (their copies are recognised too)"))
    rows += [(f"metric {k}", f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in card.metrics.items()
             if not isinstance(v, (dict, list))]
    rows += [("lsmap version", card.lsmap_version), ("created", card.created)]
    return rows
