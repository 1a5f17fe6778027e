"""``digits``: a procedurally generated digit-detection set that needs no download.

The task of the [digits-lab] report (an SVHN-like lab): find every digit 0-9 in a
picture, box it, and read the number left to right. Each image is drawn from its own
random stream ``numpy.random.default_rng([seed, split, index])`` with Pillow's
built-in scalable font (``ImageFont.load_default(size)``), so the set is identical
on every machine:

* a textured background: a two-colour gradient, low-frequency colour noise, and
  sometimes stripes, pixel noise and a slight blur;
* distractors: ellipses, rectangles, lines and arcs behind the digits, and some
  capital letters that do not look like digits;
* a row of 1..``max_digits`` digits (one size, colour and stroke; sizes are
  log-uniform so heights span ``digit_height`` = 12..120 px) and sometimes a few
  stray digits of other sizes; digits never overlap;
* image sides in ``[min_side, max_side]`` with aspect ratios 0.6..2;
* digits uniform over 0-9, or, with ``class_decay`` = q < 1, digit d with
  probability q^d / Σ_k q^k (``digits_imbalanced``: q = 0.6, so a 0 is 1 / 0.6^9 ≈ 99
  times as frequent as a 9), to give class weights ([refinedetlite] Eq. (5))
  something to correct.

A box is the exact ink bounding box of its digit (outline included) in our
continuous xyxy convention. Splits are cached under ``root/<name>/<split>/`` (``name`` = ``digits`` or
``digits_imbalanced``) as JPEG
images plus ``annotations.json`` (COCO format; each image entry also carries the
left-to-right ``"digits"`` string); the cache is rebuilt when it is incomplete or
was made by another generator version or config, and a new cache appears atomically
(built in a temporary folder, then renamed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .coco import CocoDetection
from .common import LOGGER

GENERATOR_VERSION = 1  # bump when the drawing code changes: old caches are rebuilt
SPLITS = ("train", "val", "test")
DIGIT_CLASSES = tuple(str(d) for d in range(10))  # label d is the digit d
LETTERS = "ACEFHKMNPRUVWXY"  # no O/I/S/Z/B/G/D/Q/T/L: too close to a digit
INK_HEIGHT_PER_POINT = 0.73  # digit ink height / font size for Pillow's default font


@dataclass(frozen=True)
class DigitsConfig:
    """What to generate; every field is part of the cache key."""

    num_train: int = 2000  # ~20 s to draw on one core; an epoch is 250 batches of 8
    num_val: int = 200
    num_test: int = 300
    seed: int = 0
    min_side: int = 128  # px; image sides are drawn from [min_side, max_side]
    max_side: int = 320
    max_digits: int = 5  # digits in the main row
    digit_height: Tuple[int, int] = (12, 120)  # px, log-uniform (P3..P5 get positives)
    stray_probability: float = 0.3  # chance of 1-2 extra digits elsewhere
    class_decay: float = 1.0  # q: P(digit d) ∝ q^d; 1 = uniform, < 1 = imbalanced (0 commonest)

    def __post_init__(self):
        if not 0.0 < self.class_decay <= 1.0:
            raise ValueError(f"class_decay must be in (0, 1] (1 = uniform digits), got {self.class_decay}")
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError(f"need 32 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        low, high = self.digit_height
        if not 6 <= low <= high:
            raise ValueError(f"digit_height must be (low, high) with 6 <= low <= high, got {self.digit_height}")
        if self.max_digits < 1:
            raise ValueError(f"max_digits must be >= 1, got {self.max_digits}")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[check_split(split)]

    def split_key(self, split: str) -> dict:
        """The fields that decide one split's content (other splits' sizes excluded)."""
        key = dataclasses.asdict(self)
        for name in ("num_train", "num_val", "num_test"):
            key.pop(name)
        if self.class_decay == 1.0:
            key.pop("class_decay")  # uniform digits: the key (and cache) of before the field existed
        key.update(split=split, num_images=self.num_images(split), digit_height=list(self.digit_height))
        return key


# digits_imbalanced ([refinedetlite] Eq. (5) needs imbalanced classes): P(d) ∝ 0.6^d.
IMBALANCED_DIGITS = DigitsConfig(class_decay=0.6)


def digit_probabilities(class_decay: float) -> np.ndarray:
    """(10,) P(digit d) = q^d / Σ_k q^k for q = ``class_decay``."""
    weights = class_decay ** np.arange(10, dtype=np.float64)
    return weights / weights.sum()


def sample_digits(rng: np.random.Generator, count: int, class_decay: float = 1.0) -> List[int]:
    """``count`` digits: uniform for ``class_decay == 1`` (the original stream), else ∝ q^d."""
    if class_decay == 1.0:
        return [int(d) for d in rng.integers(0, 10, count)]
    return [int(d) for d in rng.choice(10, size=count, p=digit_probabilities(class_decay))]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


_FONTS: Dict[int, ImageFont.FreeTypeFont] = {}


def font(size: int) -> ImageFont.FreeTypeFont:
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]


# --- drawing ----------------------------------------------------------------

def draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: gradient + low-frequency noise (+ stripes)."""
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0  # (H, W) in [0, 1]
    image = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]  # (H, W, 3)
    grid = (rng.uniform(0, 255, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3))).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
    image = (1 - (mix := rng.uniform(0.1, 0.5))) * image + mix * blobs
    if rng.random() < 0.3:  # stripes, like brick or siding behind a house number
        period, phase = rng.uniform(4, 24), rng.uniform(0, 2 * math.pi)
        axis = xx if rng.random() < 0.5 else yy
        image += rng.uniform(10, 40) * np.sin(2 * math.pi * axis / period + phase)[..., None]
    return np.clip(image, 0, 255)


def draw_distractors(rng: np.random.Generator, image: Image.Image) -> None:
    """Random shapes behind the digits (they may cross where digits will go)."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(int(rng.integers(0, 5))):
        x = sorted(rng.uniform(-0.1, 1.1, 2) * width)
        y = sorted(rng.uniform(-0.1, 1.1, 2) * height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        line = int(rng.integers(1, 5))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.ellipse([x[0], y[0], x[1], y[1]], outline=colour, width=line)
        elif kind == 1:
            draw.rectangle([x[0], y[0], x[1], y[1]], outline=colour, width=line)
        elif kind == 2:
            draw.line([x[0], y[1], x[1], y[0]], fill=colour, width=line)
        else:
            draw.arc([x[0], y[0], x[1], y[1]], *sorted(rng.uniform(0, 360, 2)), fill=colour, width=line)


def render_glyph(char: str, size: int, stroke: int, fill, outline) -> Image.Image:
    """One character as a tight RGBA image (its box is the whole image)."""
    fnt = font(size)
    pad = 2 * stroke + 2
    left, top, right, bottom = fnt.getbbox(char, stroke_width=stroke)
    layer = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((pad - left, pad - top), char, font=fnt, fill=fill,
                               stroke_width=stroke, stroke_fill=outline)
    return layer.crop(layer.getchannel("A").getbbox())


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> Tuple[int, int, int]:
    """A colour whose luma differs from the region's mean luma by >= 80 of 255."""
    luma = float((background.reshape(-1, 3) @ np.array([0.299, 0.587, 0.114])).mean())
    for _ in range(20):
        colour = rng.integers(0, 256, 3)
        if abs(float(colour @ np.array([0.299, 0.587, 0.114])) - luma) >= 80:
            return tuple(int(c) for c in colour)
    return (0, 0, 0) if luma > 127 else (255, 255, 255)


def _overlaps(box, boxes, margin: float = 2.0) -> bool:
    return any(box[0] < b[2] + margin and b[0] < box[2] + margin and
               box[1] < b[3] + margin and b[1] < box[3] + margin for b in boxes)


def _glyph_style(rng: np.random.Generator, height: float):
    size = max(6, int(round(height / INK_HEIGHT_PER_POINT)))
    stroke = int(rng.integers(0, max(1, size // 12) + 1)) if rng.random() < 0.5 else 0
    return size, stroke


def _paste(canvas: Image.Image, glyph: Image.Image, x: int, y: int) -> List[float]:
    canvas.alpha_composite(glyph, (x, y))
    return [float(x), float(y), float(x + glyph.width), float(y + glyph.height)]


def draw_row(rng: np.random.Generator, canvas: Image.Image, background: np.ndarray,
             cfg: DigitsConfig) -> Tuple[List[List[float]], List[int]]:
    """The main row of digits (a house number); returns boxes and digits."""
    width, height = canvas.size
    low, high = cfg.digit_height
    high = max(low, min(high, int(0.8 * height)))
    digit_h = math.exp(rng.uniform(math.log(low), math.log(high)))
    count = int(rng.integers(1, cfg.max_digits + 1))
    size, stroke = _glyph_style(rng, digit_h)
    digits = sample_digits(rng, count, cfg.class_decay)
    gap = max(1, int(rng.uniform(0.05, 0.35) * digit_h))
    fill = _contrasting_colour(rng, background)  # against the whole image: the row may sit anywhere
    outline = fill if stroke == 0 or rng.random() < 0.5 else _contrasting_colour(rng, np.array([fill], np.float32))
    glyphs = [render_glyph(str(d), size, stroke, fill + (255,), outline + (255,)) for d in digits]
    while len(glyphs) > 1 and sum(g.width for g in glyphs) + gap * (len(glyphs) - 1) > width - 2:
        glyphs.pop(), digits.pop()  # too wide for this image: shorten the number
    total_w = sum(g.width for g in glyphs) + gap * (len(glyphs) - 1)
    jitter = int(0.06 * digit_h)
    row_h = max(g.height for g in glyphs) + 2 * jitter
    if total_w > width or row_h > height:  # a single glyph larger than the image
        return [], []
    x = int(rng.integers(0, width - total_w + 1))
    y0 = int(rng.integers(0, height - row_h + 1)) + jitter
    boxes = []
    for glyph in glyphs:
        y = y0 + int(rng.integers(-jitter, jitter + 1)) + (max(g.height for g in glyphs) - glyph.height) // 2
        boxes.append(_paste(canvas, glyph, x, y))
        x += glyph.width + gap
    return boxes, digits


def draw_strays(rng: np.random.Generator, canvas: Image.Image, background: np.ndarray,
                boxes: List[List[float]], chars: str, count: int,
                class_decay: float = 1.0) -> List[Tuple[List[float], str]]:
    """Up to ``count`` single characters where they overlap nothing already drawn
    (``class_decay`` < 1: digit strays follow the imbalanced distribution)."""
    width, height = canvas.size
    low = 12
    placed = []
    for _ in range(count):
        digit_h = math.exp(rng.uniform(math.log(low), math.log(max(low, 0.5 * height))))
        size, stroke = _glyph_style(rng, digit_h)
        char = (str(sample_digits(rng, 1, class_decay)[0]) if class_decay != 1.0
                else chars[int(rng.integers(0, len(chars)))])
        fill = _contrasting_colour(rng, background)
        glyph = render_glyph(char, size, stroke, fill + (255,), fill + (255,))
        if glyph.width >= width or glyph.height >= height:
            continue
        for _attempt in range(20):
            x, y = int(rng.integers(0, width - glyph.width)), int(rng.integers(0, height - glyph.height))
            box = [x, y, x + glyph.width, y + glyph.height]
            if not _overlaps(box, boxes + [p[0] for p in placed]):
                placed.append((_paste(canvas, glyph, x, y), char))
                break
    return placed


def generate_image(seed: int, split: str, index: int, cfg: DigitsConfig):
    """Draw image ``index`` of ``split``.

    Returns:
        ``(image, boxes, labels)``: an RGB PIL image, a list of [x1, y1, x2, y2]
        continuous boxes and a list of digits (labels 0..9), in drawing order.
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    height = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(2.0)))  # W / H
    width = int(np.clip(round(height * aspect), cfg.min_side, cfg.max_side))
    background = draw_background(rng, height, width)
    canvas = Image.fromarray(background.astype(np.uint8)).convert("RGBA")
    draw_distractors(rng, canvas)
    boxes, labels = draw_row(rng, canvas, background, cfg)
    if rng.random() < cfg.stray_probability:
        strays = draw_strays(rng, canvas, background, boxes, "0123456789", int(rng.integers(1, 3)),
                             cfg.class_decay)
        for box, char in strays:
            boxes.append(box)
            labels.append(int(char))
    if rng.random() < 0.3:
        draw_strays(rng, canvas, background, boxes, LETTERS, int(rng.integers(1, 3)))
    image = canvas.convert("RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.8))))
    if rng.random() < 0.5:
        noise = rng.normal(0.0, rng.uniform(2, 12), (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    return image, boxes, labels


def read_number(boxes: List[List[float]], labels: List[int]) -> str:
    """The digits sorted left to right by box centre ([digits-lab], task 2)."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][0] + boxes[i][2]) / 2)
    return "".join(str(labels[i]) for i in order)


# --- the on-disk cache --------------------------------------------------------

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"  # SOI / EOI markers: a cut-short file lacks EOI


def _image_problem(path: Path, expected_bytes: Optional[int]) -> Optional[str]:
    """Why a cached JPEG cannot be used (missing, empty, wrong size, truncated), or None.

    Cheap: reads 2 bytes at each end of the file, never decodes it.
    """
    try:
        size = path.stat().st_size
        if expected_bytes is not None and size != expected_bytes:
            return f"{path.name} has {size} bytes, {expected_bytes} were written"
        with open(path, "rb") as handle:
            start = handle.read(2)
            handle.seek(max(size - 2, 0))
            end = handle.read(2)
    except OSError:
        return f"{path.name} is missing or unreadable"
    if start != JPEG_START or end != JPEG_END:
        return f"{path.name} is not a complete JPEG (truncated or overwritten)"
    return None


def cache_problem(folder: Path, cfg: DigitsConfig, split: str) -> Optional[str]:
    """Why the cached split in ``folder`` cannot be used, or None if it is sound.

    Checks the generator version and settings, the image count, and each image's
    presence, byte size (recorded when it was written) and JPEG start/end markers,
    so a truncated image is found before training instead of mid-epoch.
    """
    try:
        with open(folder / "annotations.json", "r", encoding="utf-8") as handle:
            data = json.load(handle)
        info = data["info"]
        if info.get("generator_version") != GENERATOR_VERSION or info.get("config") != cfg.split_key(split):
            return "made by another generator version or settings"
        if len(data["images"]) != cfg.num_images(split):
            return f"has {len(data['images'])} images, expected {cfg.num_images(split)}"
        for image in data["images"]:
            problem = _image_problem(folder / "images" / image["file_name"].split("/")[-1],
                                     image.get("file_bytes"))
            if problem:
                return problem
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"annotations.json is unreadable ({type(err).__name__})"
    return None


def _cache_is_valid(folder: Path, cfg: DigitsConfig, split: str) -> bool:
    return cache_problem(folder, cfg, split) is None


def _render_one(job) -> Tuple[dict, List[List[float]], List[int]]:
    """Draw image ``index`` of a split and save it as JPEG; returns its record, boxes, labels.

    Every image depends only on ``(seed, split, index)``, so images can be drawn in
    any order and in several processes with identical results.
    """
    folder, cfg, split, index = job
    image, boxes, labels = generate_image(cfg.seed, split, index, cfg)
    name = f"{index:06d}.jpg"
    image.save(folder / "images" / name, quality=92)
    record = {"id": index + 1, "file_name": f"images/{name}", "height": image.height,
              "width": image.width, "digits": read_number(boxes, labels),
              "file_bytes": (folder / "images" / name).stat().st_size}
    return record, boxes, labels


def _quiet_worker() -> None:
    """Start of a drawing process: leave signals to the parent.

    A forked worker inherits its parent's handlers; the trainer's SIGTERM handler
    raises KeyboardInterrupt, so the SIGTERM with which the pool is closed printed a
    traceback per worker. Workers now die on SIGTERM without a word and ignore
    Ctrl-C, which the parent handles (closing the pool).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_all(folder: Path, cfg: DigitsConfig, split: str):
    """All images of a split, drawn by two processes when there are many (it is CPU-bound)."""
    jobs = [(folder, cfg, split, index) for index in range(cfg.num_images(split))]
    workers = min(2, os.cpu_count() or 1)
    if workers > 1 and len(jobs) >= 200 and "fork" in multiprocessing.get_all_start_methods():
        # fork: the children only draw with numpy and Pillow (no torch), and start at once.
        with multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker) as pool:
            return pool.map(_render_one, jobs, chunksize=32)  # results in index order
    return [_render_one(job) for job in jobs]


def write_split(folder: Path, cfg: DigitsConfig, split: str) -> None:
    """Generate one split into ``folder`` (images/ and annotations.json)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for record, boxes, labels in _render_all(folder, cfg, split):
        images.append(record)
        for box, label in zip(boxes, labels):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": record["id"], "category_id": label + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    data = {
        "info": {"description": "fcos_from_scratch procedural digits", "generator_version": GENERATOR_VERSION,
                 "config": cfg.split_key(split)},
        "images": images, "annotations": annotations,
        "categories": [{"id": d + 1, "name": str(d)} for d in range(10)],
    }
    tmp = folder / "annotations.json.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, folder / "annotations.json")  # the json appears whole or not at all


def ensure_split(root, split: str, cfg: DigitsConfig = DigitsConfig(), force: bool = False,
                 name: str = "digits") -> Path:
    """Return ``root/<name>/<split>``, generating it first if it is missing, stale or damaged.

    A damaged cache (see :func:`cache_problem`) is named in a warning and rebuilt;
    ``force`` rebuilds it in any case. ``name`` is the cache folder ("digits" or
    "digits_imbalanced"), so the two variants never overwrite each other.
    """
    folder = Path(root).expanduser() / name / check_split(split)
    problem = "rebuild requested" if force else cache_problem(folder, cfg, split)
    if problem is None:
        return folder
    if problem != "missing":
        LOGGER.warning("%s cache %s: %s; regenerating the split", name, folder, problem)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{split}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_split(tmp, cfg, split)
    old = folder.parent / f".{split}.old-{os.getpid()}"
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)  # the new split appears in one rename
    shutil.rmtree(old, ignore_errors=True)
    return folder


class DigitsDetection(CocoDetection):
    """The generated digits set (10 classes, label = digit; category id = digit + 1).

    Args:
        root: cache folder (the split lives in ``root/digits/<split>``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        config: what to generate (:class:`DigitsConfig`).
        transforms: callable ``(image, target) -> (image, target)``.
        skip_bad: skip bad images with one warning line instead of raising.
        force: regenerate the split even if its cache is sound.
        name: the cache folder under ``root`` ("digits", or "digits_imbalanced" with
            :data:`IMBALANCED_DIGITS`).
    """

    def __init__(self, root, split: str = "train", config: DigitsConfig = DigitsConfig(),
                 transforms: Optional[Callable] = None, skip_bad: bool = False, force: bool = False,
                 name: str = "digits"):
        folder = ensure_split(root, split, config, force=force, name=name)
        super().__init__(folder, folder / "annotations.json", transforms, skip_bad, name=f"{name} {split}")
        self.config = config
        self.split = split

    def digit_string(self, index: int) -> str:
        """The left-to-right number of image ``index``, e.g. ``"4071"``."""
        return self.records[index]["info"]["digits"]
