"""The proxy task: score a decoder quickly on cached trunk features ([nas-fcos] Sec. 3.3, 4.1).

A candidate decoder cannot be trained fully for every sample of the controller,
so [nas-fcos] trains it briefly on a cheap stand-in task and uses the negative
validation loss as its reward::

    R(a) = -(L_cls + L_reg + L_ctr)  on meta-val                       [nas-fcos] Sec. 3.3

The steps, at our scale (the paper's values in brackets):

1. **split** the digits *train* split at random into meta-train and meta-val
   images [VOC train: 4000 / 1715]; val and test are never touched;
2. **crop** each image once at a fixed size, seeded [384 x 384 after resizing];
3. **trunk**: a digits trunk trained once with a plain FCOS decoder and then
   frozen [an ImageNet ResNet]; trained here briefly, deterministically, on
   crops of the train images outside meta-val, and cached under the data folder
   (:func:`load_or_train_trunk`), or taken from an FCOS digits checkpoint;
4. **features** of every crop computed once (C3, C4, C5), so a candidate's cost
   does not depend on the trunk [fast decoder adaptation];
5. each **candidate** is trained with Adam on meta-train features
   [lr 8e-4, batch 200, 15 epochs] while a Polyak average of its weights is kept
   (decay 0.9, [polyak]); the averaged weights are scored on meta-val.

Targets and losses are FCOS's own (``FCOS.decode``, ``FCOS.points``,
``FCOS.compute_loss`` of the detector built through the registry), so the
reward is the training loss of the retrained detector.
"""

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple, Union

import torch

from ..config import get_preset
from ..data import build_dataset
from ..data.registry import default_data_root
from ..engine.checkpoint import atomic_save
from ..models import build_detector, detector_config
from ..models.backbones.detection_trunk import build_trunk
from .space import Architecture, load_architecture

FAILED_REWARD = -10.0  # a candidate whose loss became NaN/inf (a finite loss sum is ~1-4 here)
BASELINE = "fpn"  # the candidate name that means plain FCOS: FPN + FCOSHead, not an architecture


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy task; [nas-fcos] Sec. 4.1's values in the comments, ours scaled for a 2-core CPU."""

    crop_size: int = 128  # fixed square crops of the native-size images [384]
    meta_train: int = 384  # meta-train images, one crop each [4000]
    meta_val: int = 128  # meta-val images [1715]
    channels: int = 32  # decoder width [64]; 32 halves a candidate's time
    steps: int = 24  # Adam steps per candidate [15 epochs of batch 200 = 300]
    batch_size: int = 16  # [200]
    lr: float = 2e-3  # Adam [8e-4]; higher for 12x fewer steps (measured: docs/CONVENTIONS.md)
    polyak_decay: float = 0.9  # w_avg <- d w_avg + (1 - d) w after each step [0.9]
    seed: int = 0  # the split, the crops, the trunk; a candidate's init and batch order add its own
    trunk: str = ""  # "" = train the trunk once and cache it; or an FCOS digits checkpoint (.pt)
    trunk_steps: int = 300  # steps of the one-off trunk training (AdamW, batch 16, the digits preset's FCOS)
    data_root: str = ""  # "" = $FCOS_DATA_ROOT or ~/.cache/fcos_from_scratch (digits and the cached trunk)

    def __post_init__(self) -> None:
        for name in ("crop_size", "meta_train", "meta_val", "channels", "steps", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32 (C5 has stride 32), got {self.crop_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.polyak_decay < 1.0:
            raise ValueError(f"polyak_decay must be in [0, 1), got {self.polyak_decay!r}")
        if self.trunk_steps < 0:
            raise ValueError(f"trunk_steps must be >= 0, got {self.trunk_steps!r}")

    @classmethod
    def from_dict(cls, data: Dict) -> "ProxyConfig":
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ValueError(f"unknown proxy option {unknown[0]!r} (options: {', '.join(known)})")
        return cls(**data)


# ---------------------------------------------------------------------------
# Data: split, fixed crops
# ---------------------------------------------------------------------------

def split_indices(num_images: int, meta_train: int, meta_val: int, seed: int) -> Tuple[List[int], List[int]]:
    """A seeded random split of ``range(num_images)`` into disjoint meta-train and meta-val lists."""
    if meta_train + meta_val > num_images:
        raise ValueError(f"meta_train + meta_val = {meta_train + meta_val} exceeds the {num_images} "
                         f"images of the train split")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[:meta_train], order[meta_train:meta_train + meta_val]


def fixed_crop(image: torch.Tensor, target: Dict, size: int, generator: torch.Generator,
               min_visible: float = 0.5) -> Tuple[torch.Tensor, Dict]:
    """A random ``size`` x ``size`` crop (zero-padded if the image is smaller) and its boxes.

    Boxes are shifted and clipped to the crop; a box keeping less than
    ``min_visible`` of its area is dropped (a half-cut digit is not a digit).

    Returns:
        (3, size, size) image and ``{"boxes": (M, 4) xyxy, "labels": (M,)}``.
    """
    _, height, width = image.shape
    top = int(torch.randint(0, max(height - size, 0) + 1, (1,), generator=generator))
    left = int(torch.randint(0, max(width - size, 0) + 1, (1,), generator=generator))
    crop = image.new_zeros(3, size, size)
    patch = image[:, top:top + size, left:left + size]
    crop[:, :patch.shape[1], :patch.shape[2]] = patch
    boxes = target["boxes"].float() - torch.tensor([left, top, left, top], dtype=torch.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (M,)
    clipped = boxes.clamp(min=0, max=size)
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= min_visible * area
    return crop, {"boxes": clipped[kept], "labels": target["labels"][kept]}


def make_crops(dataset, indices: Sequence[int], size: int, seed: int) -> Tuple[torch.Tensor, List[Dict]]:
    """One fixed crop per image: (N, 3, size, size) in [0, 1] and N targets."""
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for index in indices:
        image, target = dataset[index]
        crop, kept = fixed_crop(image, target, size, generator)
        images.append(crop)
        targets.append(kept)
    return torch.stack(images), targets


# ---------------------------------------------------------------------------
# The frozen trunk
# ---------------------------------------------------------------------------

def proxy_fcos_config():
    """The digits preset's FCOS with [fcos]'s loss: focal gamma 2, every term weight 1.

    The reward R = -(L_cls + L_reg + L_ctr) of [nas-fcos] is measured in these units.
    The main job's training recipe (focal gamma 1, focal-term weight 2) would change
    them, and with them every reward and the cached trunk, so the proxy pins them.
    """
    return dataclasses.replace(get_preset("digits").model, focal_gamma=2.0, cls_weight=1.0)


def detector_fields(channels: int) -> Dict:
    """FCOS's fields for digits (:func:`proxy_fcos_config`), the decoder ``channels`` wide."""
    fields = dataclasses.asdict(proxy_fcos_config())
    return dict(fields, fpn_channels=channels)


def train_trunk(dataset, indices: Sequence[int], config: ProxyConfig) -> torch.nn.Module:
    """Train a plain FCOS (the digits preset's) on fresh seeded crops; return its trunk, frozen.

    AdamW at the digits preset's learning rate, ``trunk_steps`` steps of 16 crops
    drawn from ``indices`` (never meta-val). Deterministic for a given config.
    """
    preset = get_preset("digits")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_detector("fcos", proxy_fcos_config()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.train.lr, weight_decay=preset.train.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1)
    for step in range(config.trunk_steps):
        pick = torch.randint(0, len(indices), (16,), generator=generator).tolist()
        images, targets = [], []
        for i in pick:
            crop, target = fixed_crop(*dataset[indices[i]], config.crop_size, generator)
            images.append(crop)
            targets.append(target)
        losses = model(list(images), targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), preset.train.grad_clip_norm)
        optimizer.step()
    return freeze(model.backbone)


def freeze(trunk: torch.nn.Module) -> torch.nn.Module:
    trunk.eval()
    for param in trunk.parameters():
        param.requires_grad_(False)
    return trunk


def trunk_key(config: ProxyConfig, dataset) -> str:
    """A short hash of everything the trained trunk depends on (the data's generator config too)."""
    preset = get_preset("digits")
    fields = dict(crop=config.crop_size, meta_train=config.meta_train, meta_val=config.meta_val,
                  seed=config.seed, steps=config.trunk_steps, images=len(dataset),
                  data=repr(getattr(dataset, "config", None)),
                  model=repr(proxy_fcos_config()), lr=preset.train.lr, wd=preset.train.weight_decay)
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def load_trunk_checkpoint(path: Union[str, Path]) -> torch.nn.Module:
    """The frozen trunk of an FCOS digits checkpoint (``backbone.*`` of its model)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"trunk={str(path)!r} is not a file; pass an FCOS digits checkpoint or '' to train one")
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"trunk={str(path)!r} holds no model state dict")
    trunk = build_trunk("tiny")
    backbone = {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
    try:
        trunk.load_state_dict(backbone)
    except RuntimeError as err:
        raise ValueError(f"trunk={str(path)!r} is not a checkpoint of a backbone='tiny' detector "
                         f"({str(err).splitlines()[0]})") from None
    return freeze(trunk)


def load_or_train_trunk(dataset, meta_val: Sequence[int], config: ProxyConfig, log=print) -> torch.nn.Module:
    """The frozen trunk: from ``config.trunk``, from the cache, or trained once and cached."""
    if config.trunk:
        return load_trunk_checkpoint(config.trunk)
    root = Path(config.data_root).expanduser() if config.data_root else default_data_root()
    path = root / "nas" / f"trunk-{trunk_key(config, dataset)}.pt"
    trunk = build_trunk("tiny")
    if path.is_file():
        trunk.load_state_dict(torch.load(path, map_location="cpu"))
        return freeze(trunk)
    held_out = set(meta_val)
    pool = [i for i in range(len(dataset)) if i not in held_out]
    log(f"training the proxy trunk once ({config.trunk_steps} steps), cached at {path}")
    start = time.process_time()
    trunk = train_trunk(dataset, pool, config)
    atomic_save(trunk.state_dict(), path)
    log(f"trunk trained in {time.process_time() - start:.0f} s of CPU time")
    return trunk


# ---------------------------------------------------------------------------
# Cached features
# ---------------------------------------------------------------------------

class ProxyData(NamedTuple):
    """Trunk features of the fixed crops: meta-train and meta-val."""

    train_features: List[torch.Tensor]  # C3, C4, C5: (N_t, C_i, S / s_i, S / s_i)
    train_targets: List[Dict]
    val_features: List[torch.Tensor]
    val_targets: List[Dict]
    in_channels: Tuple[int, ...]
    crop_size: int


@torch.no_grad()
def trunk_features(trunk: torch.nn.Module, images: torch.Tensor, batch_size: int = 32) -> List[torch.Tensor]:
    """C3..C5 of ``images`` (N, 3, S, S) in [0, 1], normalised as FCOS does."""
    preprocess = build_detector("fcos", get_preset("digits").model).preprocess
    chunks = []
    for start in range(0, len(images), batch_size):
        batch, _ = preprocess(list(images[start:start + batch_size]))
        chunks.append(list(trunk(batch).values()))
    return [torch.cat(level) for level in zip(*chunks)]


def prepare(config: ProxyConfig = ProxyConfig(), dataset=None, log=print) -> ProxyData:
    """Split, crop, get the frozen trunk and cache the features of every crop."""
    if dataset is None:
        dataset = build_dataset("digits", "train", root=config.data_root or None, train=False, augment=False)
    meta_train, meta_val = split_indices(len(dataset), config.meta_train, config.meta_val, config.seed)
    trunk = load_or_train_trunk(dataset, meta_val, config, log)
    train_images, train_targets = make_crops(dataset, meta_train, config.crop_size, config.seed)
    val_images, val_targets = make_crops(dataset, meta_val, config.crop_size, config.seed + 1)
    return ProxyData(trunk_features(trunk, train_images), train_targets,
                     trunk_features(trunk, val_images), val_targets,
                     tuple(trunk.out_channels), config.crop_size)


# ---------------------------------------------------------------------------
# One candidate
# ---------------------------------------------------------------------------

def build_candidate(arch: Union[Architecture, str], config: ProxyConfig) -> torch.nn.Module:
    """The detector to score: NAS-FCOS with ``arch``, or plain FCOS for ``arch="fpn"``."""
    fields = detector_fields(config.channels)
    if arch == BASELINE:
        return build_detector("fcos", detector_config("fcos", **fields))
    arch = load_architecture(arch)
    return build_detector("nas_fcos", detector_config("nas_fcos", **fields,
                                                      arch=json.dumps(arch.to_dict())))


def decoder_parameters(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    """Everything but the trunk: FPN + head, or the searched decoder."""
    return [p for name, p in model.named_parameters() if not name.startswith("backbone.")]


def proxy_losses(model, features: Sequence[torch.Tensor], targets: Sequence[Dict], crop_size: int) -> Dict:
    """FCOS's three losses of ``model``'s decoder on cached ``features``."""
    level_sizes, (cls_logits, box_ltrb, ctr_logits) = model.decode(list(features))
    points = model.points((crop_size, crop_size), level_sizes)
    return model.compute_loss(cls_logits, box_ltrb, ctr_logits, points, list(targets))


def evaluate_candidate(arch: Union[Architecture, str], data: ProxyData, config: ProxyConfig,
                       seed: int = 0) -> Dict:
    """Train one decoder briefly, Polyak-average it, return its reward and losses.

    Args:
        arch: an architecture, a name or JSON accepted by ``load_architecture``,
            or ``"fpn"`` for plain FCOS (FPN + FCOSHead).
        data: :func:`prepare`'s cached features.
        seed: the candidate's initial weights and batch order.

    Returns:
        ``{"reward", "loss_cls", "loss_box", "loss_ctr", "cpu_s", "wall_s", "failed"}``;
        reward = -(L_cls + L_reg + L_ctr) on meta-val, ``FAILED_REWARD`` if not finite.
    """
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_candidate(arch, config).train()
    params = decoder_parameters(model)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    num_train = len(data.train_targets)
    order, cursor = torch.randperm(num_train, generator=generator), 0
    averaged = None  # the Polyak average, started from the first step's weights
    failed = False
    for _ in range(config.steps):
        if cursor and cursor + config.batch_size > num_train:  # a new epoch: a new order
            order, cursor = torch.randperm(num_train, generator=generator), 0
        idx = order[cursor:cursor + config.batch_size]
        cursor += config.batch_size
        losses = proxy_losses(model, [f[idx] for f in data.train_features],
                              [data.train_targets[i] for i in idx.tolist()], data.crop_size)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            failed = True
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # [polyak]: w_avg <- d w_avg + (1 - d) w
            if averaged is None:
                averaged = [p.detach().clone() for p in params]
            else:
                for avg, p in zip(averaged, params):
                    avg.mul_(config.polyak_decay).add_(p.detach(), alpha=1 - config.polyak_decay)
    result = {"loss_cls": math.nan, "loss_box": math.nan, "loss_ctr": math.nan}
    if not failed:
        with torch.no_grad():
            if averaged is not None:
                for avg, p in zip(averaged, params):
                    p.copy_(avg)
            result = validation_losses(model, data)
    total = result["loss_cls"] + result["loss_box"] + result["loss_ctr"]
    failed = failed or not math.isfinite(total)
    return dict(result, reward=FAILED_REWARD if failed else -total, failed=failed,
                cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)


@torch.no_grad()
def validation_losses(model, data: ProxyData, batch_size: int = 32) -> Dict[str, float]:
    """Each loss term averaged over meta-val batches (weighted by batch size)."""
    totals = {"loss_cls": 0.0, "loss_box": 0.0, "loss_ctr": 0.0}
    num_val = len(data.val_targets)
    for start in range(0, num_val, batch_size):
        end = min(start + batch_size, num_val)
        losses = proxy_losses(model, [f[start:end] for f in data.val_features],
                              data.val_targets[start:end], data.crop_size)
        for key in totals:
            totals[key] += float(losses[key]) * (end - start) / num_val
    return totals
