"""Run configuration: training fields, a detector's fields, presets, ``--key=value`` overrides.

Every field has one owner. :class:`TrainConfig` holds what a training run needs
(data, optimisation, schedule, checkpoints); each detector's frozen dataclass at
the top of its own module (e.g. ``FCOSConfig`` in ``models/detectors/fcos.py``)
holds every option of that detector. A :class:`RunConfig` pairs the two, and
names are unique across them (``tests/test_config.py`` checks it), so the command
line needs no prefixes::

    python -m fcos_from_scratch.train                         # the "digits" preset (FCOS)
    python -m fcos_from_scratch.train --preset=voc_r18 --lr=0.005 --device=cuda
    python -m fcos_from_scratch.train --center_sampling_radius=0 --nms_thresh=0.5

A preset is a named set of values of both owners and names its detector
(``model``); ``--model NAME`` without ``--preset`` starts from that detector's
digits preset, ``--dataset NAME`` from the preset for that dataset. Values are
parsed by the field's type (``int``, ``float``, ``bool``, ``str``, optional
values, tuples such as ``--lr_steps=8,11``); a wrong type or an unknown key is a
``ValueError`` naming the key, with close matches for unknown keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .presets import DATASET_PRESETS, DEFAULT_PRESET, PRESETS  # noqa: F401  (part of this module's API)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "auto", "")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs apart from the detector; frozen so a run cannot
    change it midway.

    Zero means "off" for the optional numeric limits (``grad_clip_norm``,
    ``max_minutes``, ``max_steps``, ``max_steps_per_epoch``, ``ema_decay``); an empty
    string means "none" for the optional paths and splits.
    """

    # --- data -------------------------------------------------------------
    dataset: str = "digits"  # "digits" (embedded, no download), "digits_imbalanced" (P(d) ∝ 0.6^d), "voc" or "coco"
    data_root: str = ""  # "" = $FCOS_DATA_ROOT or ~/.cache/fcos_from_scratch
    train_split: str = "train"  # split the model is trained on
    val_split: str = "val"  # picks best.pt (and any tuning); "" = no selection, best = last
    test_split: str = "test"  # evaluated once, at the end, on the chosen checkpoint
    min_size: int = 0  # resize shorter side to this (0 = keep the dataset's size)
    max_size: int = 0  # cap on the longer side ([fcos-light]: 800 / 1333)
    augment: bool = True  # random photometric/geometric augmentation of training images
    augmentation: str = "default"  # "default" (the dataset's own) or "ssd" ([ssd]: distort, zoom out, min-IoU crop; needs input_size)
    input_size: int = 0  # > 0: resize every image to input_size x input_size ([refinedetlite]: 320); 0 = keep min_size rule
    no_aug_epochs: int = 0  # augmentation off for the last E epochs ([digits-lab])
    num_workers: int = 0  # data-loading processes (0 = in the training process)
    group_by_size: int = 0  # > 0: batches of similar-size images, sorted in windows of this many batches
    skip_bad: bool = False  # skip unreadable images with a warning instead of stopping the run

    # --- model ------------------------------------------------------------
    model: str = "fcos"  # the detector, a name of fcos_from_scratch.models.DETECTORS
    init_from: str = ""  # checkpoint whose weights start the run (fresh optimiser: fine-tuning)

    # --- optimisation -----------------------------------------------------
    optimizer: str = "sgd"  # "sgd" (momentum), "adamw" (decoupled decay) or "adam" (coupled L2)
    lr: float = 0.01  # [fcos-light] cosine 1e-2 -> 1e-5; [cs771-hw3] 0.01
    min_lr: float = 1e-5  # end of the cosine ([fcos-light] Fig. 10)
    momentum: float = 0.9  # SGD only
    betas: Tuple[float, ...] = (0.9, 0.999)  # Adam / AdamW only
    weight_decay: float = 1e-4  # [fcos] Sec. 4, [fcos-light]; never on norms and biases
    lr_mults: Tuple[str, ...] = ()  # "prefix=mult" per module prefix, e.g. backbone=0.5 ([digits-lab])
    warmup: str = "linear"  # "linear", "constant" or "none"
    warmup_fraction: float = 0.01  # [fcos-light]: warm-up over 1 % of the steps
    warmup_factor: float = 0.001  # LR multiplier at step 0 of the warm-up
    schedule: str = "cosine"  # "cosine", "step" or "constant"
    lr_steps: Tuple[int, ...] = ()  # epochs at which "step" multiplies LR by lr_gamma
    lr_milestone_steps: Tuple[int, ...] = ()  # the same in optimiser steps (replaces lr_steps)
    lr_gamma: float = 0.1  # "step" schedule: LR multiplier at each milestone, in (0, 1] ([fcos] Sec. 4: 0.1)
    epochs: int = 12  # passes over the training split ([fcos-light]: 12 on VOC)
    max_steps: int = 0  # > 0: the run is exactly this many optimiser steps (epochs = enough)
    batch_size: int = 8  # [fcos-light] final setting
    grad_clip_norm: float = 0.0  # max global L2 norm of the gradients (0 = off)
    ema_decay: float = 0.0  # > 0: evaluate an exponential moving average of the weights [polyak]

    # --- run --------------------------------------------------------------
    device: str = "auto"  # "auto" = cuda if available else cpu
    amp: bool = True  # mixed precision, used on CUDA only
    channels_last: bool = True  # NHWC memory format: faster convolutions on CUDA and on CPUs (oneDNN)
    sync_bn: bool = True  # multi-GPU: BatchNorm statistics over the global batch (CUDA only)
    seed: int = 0  # seeds weights, data order and augmentation: same seed, same run
    out: str = "runs/digits"  # run folder (config.json, last.pt, best.pt, metrics); never clobbered
    resume: str = ""  # checkpoint path, or "auto" = <out>/last.pt if present
    overwrite: bool = False  # start afresh in an --out that already holds a run (its files are replaced)
    checkpoint_every: int = 1000  # also write last.pt every N optimiser steps (0 = only after each epoch)
    log_every: int = 10  # steps between metrics.jsonl records
    eval_every: int = 0  # evaluate on val_split every N epochs (0 = only at the end)
    max_minutes: float = 0.0  # stop training this long after the start (0 = no limit)
    time_schedule: bool = False  # with max_minutes: elapsed time also advances the LR schedule
    max_steps_per_epoch: int = 0  # 0 = the whole loader (handy for smoke tests)
    progress: bool = True  # show the progress bar with ETA and loss terms

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, ("sgd", "adamw", "adam"))
        _check_choice("warmup", self.warmup, ("linear", "constant", "none"))
        _check_choice("schedule", self.schedule, ("cosine", "step", "constant"))
        _check_choice("dataset", self.dataset, ("digits", "digits_imbalanced", "voc", "coco"))
        _check_choice("augmentation", self.augmentation, ("default", "ssd"))
        for f in dataclasses.fields(self):  # inf or NaN would poison the run silently
            value = getattr(self, f.name)
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip_norm", "max_minutes", "momentum",
                     "max_steps", "ema_decay", "max_steps_per_epoch", "eval_every", "num_workers",
                     "checkpoint_every", "min_size", "max_size", "no_aug_epochs", "input_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.input_size and self.min_size:
            raise ValueError(f"input_size={self.input_size} and min_size={self.min_size} both resize "
                             "the images: set one of them (input_size=0 or min_size=0)")
        if self.augmentation == "ssd" and not self.input_size:
            raise ValueError("augmentation='ssd' needs input_size > 0 (SSD trains at a fixed size, "
                             "e.g. --input_size=320)")
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1) (e.g. 0.9,0.999), got {self.betas}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if not self.out.strip():
            raise ValueError("out must name a run folder (e.g. --out=runs/mine), got an empty string")
        if self.ema_decay >= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 < self.warmup_factor <= 1.0:
            raise ValueError(f"warmup_factor must be in (0, 1], got {self.warmup_factor}")
        for name in ("lr_steps", "lr_milestone_steps"):
            if list(getattr(self, name)) != sorted(getattr(self, name)):
                raise ValueError(f"{name} must be increasing, got {getattr(self, name)}")
        parse_lr_mults(self.lr_mults)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (tuples become lists) for JSON and checkpoints."""
        return to_plain_dict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict, rejecting unknown keys (with suggestions) and wrong types."""
        return dataclass_from_dict(cls, values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied, type-checked like ``from_dict``."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def parse_lr_mults(entries: Sequence[str]) -> List[Tuple[str, float]]:
    """``("backbone=0.5", ...)`` -> ``[("backbone", 0.5), ...]`` (checked)."""
    parsed = []
    for entry in entries:
        prefix, eq, value = str(entry).partition("=")
        try:
            mult = float(value)
        except ValueError:
            mult = -1.0
        if not eq or not prefix or not mult >= 0 or not math.isfinite(mult):
            raise ValueError(f"lr_mults entries look like 'prefix=multiplier' with a multiplier "
                             f">= 0 (e.g. backbone=0.5), got {entry!r}")
        parsed.append((prefix, mult))
    return parsed


# ---------------------------------------------------------------------------
# Generic dataclass parsing, shared by TrainConfig and every detector config
# ---------------------------------------------------------------------------

def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def to_plain_dict(config: Any) -> Dict[str, Any]:
    """A config dataclass as JSON values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def field_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def field_names(cls: type = TrainConfig) -> List[str]:
    """Names of the fields of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def dataclass_from_dict(cls: type, values: Mapping[str, Any]):
    """``cls(**values)`` with unknown keys rejected and every value coerced to its field type."""
    reject_unknown(values.keys(), field_names(cls))
    hints = field_types(cls)
    return cls(**{k: coerce(k, v, hints[k]) for k, v in values.items()})


# Common spellings that are not field names; used only to suggest the real key.
_ALIASES = {
    "learning_rate": "lr",
    "base_lr": "lr",
    "wd": "weight_decay",
    "num_epochs": "epochs",
    "max_epochs": "epochs",
    "bs": "batch_size",
    "clip_grad_norm": "grad_clip_norm",
    "output_dir": "out",
    "warmup_ratio": "warmup_fraction",
    "max_iter": "max_steps",
}


def reject_unknown(keys, known: Sequence[str]) -> None:
    known = list(known)
    for key in keys:
        if key not in known:
            candidates = known + [a for a, real in _ALIASES.items() if real in known]
            close = difflib.get_close_matches(key, candidates, n=4, cutoff=0.5)
            close = list(dict.fromkeys(_ALIASES.get(c, c) for c in close))
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint} (valid keys: {', '.join(known)})")


def coerce(key: str, value: Any, kind: Any) -> Any:
    """Convert ``value`` (a string from the CLI, or a JSON value) to the field type ``kind``."""
    if typing.get_origin(kind) is typing.Union:  # Optional[X]
        inner = [k for k in typing.get_args(kind) if k is not type(None)][0]
        if value is None or (isinstance(value, str) and value.lower() in _NONE):
            return None
        return coerce(key, value, inner)
    if typing.get_origin(kind) is tuple:
        (inner, *_rest) = typing.get_args(kind)
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} expects a comma-separated list of {inner.__name__}, got {value!r}")
        return tuple(coerce(key, v, inner) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError(f"{key} expects a bool (true/false/1/0), got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{key} expects an int, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value, 10)
        except (TypeError, ValueError):
            raise ValueError(f"{key} expects an int, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} expects a float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} expects a float, got {value!r}") from None
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} expects a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {kind} for {key}")  # pragma: no cover


# ---------------------------------------------------------------------------
# RunConfig: the training config and the detector's config
# ---------------------------------------------------------------------------

def _detector_class(name: str) -> type:
    from .models.registry import get_detector  # the registry imports every detector

    return get_detector(name).config_class


@dataclass(frozen=True)
class RunConfig:
    """A training config and the config of its detector (``train.model``).

    Field names are unique across the two, so attribute access finds a field in
    whichever owns it: ``run.lr`` is ``run.train.lr``, ``run.backbone`` is
    ``run.model.backbone``. ``model`` may be None when a run is given a ready model.
    """

    train: TrainConfig
    model: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for owner in (self.train, self.model):
            if owner is not None and name in {f.name for f in dataclasses.fields(owner)}:
                return getattr(owner, name)
        raise AttributeError(f"no config field {name!r} in TrainConfig or the {self.train.model} config")

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied to whichever config owns each key (type-checked)."""
        train_keys = set(field_names(TrainConfig))
        model_name = str(changes.get("model", self.train.model))
        model_keys = set(field_names(_detector_class(model_name)))
        reject_unknown(changes, sorted(train_keys | model_keys))
        train = self.train.replace(**{k: v for k, v in changes.items() if k in train_keys})
        model_changes = {k: v for k, v in changes.items() if k in model_keys and k not in train_keys}
        model = self.model
        if model_changes or model_name != self.train.model:
            base = to_plain_dict(self.model) if model_name == self.train.model and self.model else {}
            model = dataclass_from_dict(_detector_class(model_name), {**base, **model_changes})
        return RunConfig(train, model)

    def to_dict(self) -> Dict[str, Any]:
        """``{"train": {...}, "model": {...} or None}`` for JSON and checkpoints."""
        return {"train": self.train.to_dict(),
                "model": to_plain_dict(self.model) if self.model is not None else None}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`."""
        if "train" not in values:
            raise ValueError(f"a run config has 'train' and 'model' entries, got keys {sorted(values)}")
        train = TrainConfig.from_dict(values["train"])
        model = values.get("model")
        model = None if model is None else dataclass_from_dict(_detector_class(train.model), model)
        return cls(train, model)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Split one flat dict (a preset) between the training and detector configs."""
        train_keys = field_names(TrainConfig)
        train = TrainConfig.from_dict({k: v for k, v in values.items() if k in train_keys})
        model_keys = field_names(_detector_class(train.model))
        reject_unknown(values, train_keys + model_keys)
        model = dataclass_from_dict(_detector_class(train.model),
                                    {k: v for k, v in values.items() if k not in train_keys})
        return cls(train, model)


# ---------------------------------------------------------------------------
# Presets (the values live in presets.py)
# ---------------------------------------------------------------------------

def get_preset(name: str) -> RunConfig:
    """The :class:`RunConfig` of a named preset."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint} (presets: {', '.join(PRESETS)})")
    return RunConfig.from_flat(PRESETS[name])


def default_preset(model: Optional[str], dataset: Optional[str]) -> str:
    """The preset that ``--model``/``--dataset`` without ``--preset`` start from."""
    from .models.registry import get_detector

    model = model or "fcos"
    entry = get_detector(model)  # an unknown model name fails here, with close matches
    if not dataset:
        return entry.digits_preset
    if (model, dataset) not in DATASET_PRESETS:
        raise ValueError(f"no preset trains model {model!r} on dataset {dataset!r}; "
                         f"pass --preset=NAME (presets: {', '.join(PRESETS)})")
    return DATASET_PRESETS[(model, dataset)]


def parse_cli(argv: Sequence[str]) -> Tuple[str, Dict[str, str]]:
    """Split ``argv`` into a preset name and ``{key: raw string}`` overrides.

    Accepts ``--key=value``, ``--key value``, a bare ``--flag`` (bool true) and
    ``--no-flag`` (bool false); dashes in keys mean underscores. Keys are checked
    against the training fields and the chosen detector's fields.
    """
    pairs, preset = _split_args(argv)
    model = pairs.get("model") or (PRESETS[preset]["model"] if preset in PRESETS else None)
    if preset is None:
        preset = default_preset(pairs.get("model"), pairs.get("dataset"))
        model = model or PRESETS[preset]["model"]
    known = field_names(TrainConfig) + field_names(_detector_class(model or "fcos"))
    reject_unknown(pairs, known)
    return preset, pairs


def split_options(argv: Sequence[str], bool_names) -> List[Tuple[str, str]]:
    """``--key=value``, ``--key value``, ``--flag`` and ``--no-flag`` -> ``[(key, value), ...]``.

    Dashes in keys become underscores; a key in ``bool_names`` may stand alone
    (``"true"``) or with a ``no_`` prefix (``"false"``). Values stay strings for the
    caller to :func:`coerce`. Raises ``ValueError`` for a bare word or a missing value.
    """
    pairs: List[Tuple[str, str]] = []
    args, i = list(argv), 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}: options look like --key=value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if key.startswith("no_") and key[3:] in bool_names:
                key, value = key[3:], "false"
            elif key in bool_names and (i + 1 >= len(args) or args[i + 1].startswith("--")):
                value = "true"
            elif i + 1 < len(args):
                i, value = i + 1, args[i + 1]
            else:
                raise ValueError(f"option --{key} needs a value")
        pairs.append((key, value))
        i += 1
    return pairs


def _split_args(argv: Sequence[str]) -> Tuple[Dict[str, str], Optional[str]]:
    bools = {k for cls in _all_config_classes() for k, t in field_types(cls).items() if t is bool}
    preset, pairs = None, {}
    for key, value in split_options(argv, bools):
        if key in ("preset", "config"):
            preset = value
        else:
            pairs[key] = value
    return pairs, preset


def _all_config_classes() -> List[type]:
    from .models.registry import DETECTORS

    return [TrainConfig] + [entry.config_class for entry in DETECTORS.values()]


def config_from_cli(argv: Sequence[str]) -> RunConfig:
    """Preset plus type-checked overrides from the command line."""
    preset, overrides = parse_cli(argv)
    return get_preset(preset).replace(**overrides)


def non_defaults(config: Any) -> str:
    """``key = value`` lines of the fields that differ from their declared defaults."""
    if isinstance(config, RunConfig):
        return "\n".join(p for p in (non_defaults(config.train),
                                      non_defaults(config.model) if config.model is not None else "") if p)
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            lines.append(f"  {f.name} = {value!r}")
    return "\n".join(lines)


def field_help(cls: type) -> Dict[str, str]:
    """Each field's comment in the class source (``# ...`` after its default): its description.

    Fields inherited from a dataclass base (NAS-FCOS's config extends FCOS's) take the base's comment.
    """
    import inspect

    help_text = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # a subclass's comment wins
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # pragma: no cover - no source available
            continue
        for line in source.splitlines():
            stripped = line.strip()
            name, colon, rest = stripped.partition(":")
            if colon and name.isidentifier() and "#" in rest:
                help_text[name] = rest.split("#", 1)[1].strip()
    return help_text
