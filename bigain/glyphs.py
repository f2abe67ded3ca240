"""Letters rendered from the fonts matplotlib bundles: the data of the embedded ``glyphs-*`` models.

26 classes (A–Z), drawn light-on-dark at :data:`SIZE`×:data:`SIZE` px in [-1, 1]. The classes differ
in small strokes (E/F, O/Q, P/R, C/G, I/J), which is what makes a diffusion classifier lean on the
high-frequency detail BiGain protects. The 22 bundled faces that carry Latin capitals are split by
**whole font**: :data:`TEST_FACES` are never trained on, so test glyphs are shapes the models have not
seen. Training draws from a bank of jittered renderings (scale, shift, small rotation, stroke weight),
each one a pure function of (face, letter, index, seed): the data is the same on every machine.

Everything is offline: the fonts ship inside matplotlib (DejaVu: Bitstream Vera licence; STIX: SIL OFL
1.1; Computer Modern (BaKoMa): the AMS/BaKoMa licence; see docs/data-licences.md).
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 32
CLASSES: tuple[str, ...] = tuple(string.ascii_uppercase)
NUM_CLASSES = len(CLASSES)
#: Super-sampling factor: glyphs are drawn at 4× and box-filtered down (anti-aliased edges).
_SS = 4
#: Cap height of an un-jittered glyph as a fraction of the image side.
_CAP = 0.62

#: Every bundled face with Latin capitals (DejaVuS*Display, STIXNonUni/STIXSiz*, cmex/cmsy hold none).
FACES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
    "cmmi10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)
#: Held out whole (one per family, each with trained relatives): the test split.
TEST_FACES: tuple[str, ...] = (
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
)
TRAIN_FACES: tuple[str, ...] = tuple(f for f in FACES if f not in TEST_FACES)
#: Jitter ranges for training renderings: scale factor, shift (px at SIZE), rotation (degrees),
#: stroke (−1 thinner, 0, +1/+2 bolder: a min/max filter at the super-sampled size).
JITTER = {"scale": (0.85, 1.1), "shift": 2.0, "rotate": 8.0, "stroke": (-1, 2)}


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=64)
def _font(face: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / face), px)


@functools.lru_cache(maxsize=32)
def _font_size(face: str) -> int:
    """Font size (at the super-sampled side) whose capital H is ``_CAP`` of the image tall."""
    probe = 200
    box = _font(face, probe).getbbox("H")
    return max(8, round(probe * _CAP * SIZE * _SS / (box[3] - box[1])))


def _draw(face: str, letter: str, scale: float = 1.0) -> Image.Image:
    """The glyph alone, cropped to its ink, at the super-sampled size (mode L, ink 255)."""
    font = _font(face, max(8, round(_font_size(face) * scale)))
    side = SIZE * _SS * 3
    im = Image.new("L", (side, side), 0)
    ImageDraw.Draw(im).text((side // 2, side // 2), letter, font=font, fill=255, anchor="mm")
    box = im.getbbox()
    if box is None:
        raise ValueError(f"{face} has no glyph for {letter!r}")
    return im.crop(box)


def render(
    face: str,
    letter: str,
    *,
    scale: float = 1.0,
    dx: float = 0.0,
    dy: float = 0.0,
    rotate: float = 0.0,
    stroke: int = 0,
) -> np.ndarray:
    """One glyph → (SIZE, SIZE) float32 in [-1, 1], light ink on a dark ground, centred on its ink
    box then shifted by (dx, dy) px, rotated by ``rotate`` degrees, stroke thickened (>0) or thinned (<0)."""
    g = _draw(face, letter, scale)
    if stroke:
        f = ImageFilter.MaxFilter if stroke > 0 else ImageFilter.MinFilter
        g = Image.fromarray(np.pad(np.asarray(g), 4)).filter(f(2 * abs(stroke) + 1))
        g = g.crop(g.getbbox() or (0, 0, 1, 1))
    if rotate:
        g = g.rotate(rotate, resample=Image.Resampling.BICUBIC, expand=True)
    side = SIZE * _SS
    fit = 0.92 * side / max(g.size)
    if fit < 1:  # wide glyphs (W, M) at a large scale: keep the whole letter in frame
        g = g.resize((max(1, round(g.width * fit)), max(1, round(g.height * fit))), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (side, side), 0)
    x = round((side - g.width) / 2 + dx * _SS)
    y = round((side - g.height) / 2 + dy * _SS)
    canvas.paste(g, (x, y))
    small = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 127.5 - 1.0


def _jitter(rng: np.random.Generator) -> dict[str, float | int]:
    j = JITTER
    return {
        "scale": float(rng.uniform(*j["scale"])),
        "dx": float(rng.uniform(-j["shift"], j["shift"])),
        "dy": float(rng.uniform(-j["shift"], j["shift"])),
        "rotate": float(rng.uniform(-j["rotate"], j["rotate"])),
        "stroke": int(rng.integers(j["stroke"][0], j["stroke"][1] + 1)),
    }


def _faces(part: str) -> tuple[str, ...]:
    if part == "train":
        return TRAIN_FACES
    if part == "test":
        return TEST_FACES
    raise ValueError(f"part must be 'train' or 'test', got {part!r}")


@functools.lru_cache(maxsize=8)
def _bank(part: str, per_glyph: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    faces = _faces(part)
    images, labels = [], []
    for fi, face in enumerate(faces):
        for ci, letter in enumerate(CLASSES):
            rng = np.random.default_rng([seed, FACES.index(face), ci])
            for k in range(per_glyph):
                kw = _jitter(rng) if k else {}
                images.append(render(face, letter, **kw))
                labels.append(ci)
        del fi
    x = torch.from_numpy(np.stack(images))[:, None]
    return x, torch.tensor(labels, dtype=torch.int64)


def load(part: str = "train", per_glyph: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, SIZE, SIZE) in [-1, 1] and labels (N,) of ``part`` ("train" or "test").

    ``per_glyph`` renderings of every (face, letter): the first is the plain glyph, the others jittered
    (seeded per face and letter, so a larger bank extends a smaller one). Ordered face, letter, index."""
    if per_glyph < 1:
        raise ValueError(f"per_glyph must be ≥ 1, got {per_glyph}")
    x, y = _bank(part, int(per_glyph), int(seed))
    return x.clone(), y.clone()


def faces_of(part: str, per_glyph: int = 1) -> list[str]:
    """The face of every image :func:`load` returns, in order."""
    return [f for f in _faces(part) for _ in range(NUM_CLASSES * per_glyph)]


def split_record() -> dict:
    """What a training record stores about the data, so the split can be checked later."""
    return {
        "dataset": "glyphs rendered from matplotlib's bundled fonts (bigain.glyphs)",
        "classes": list(CLASSES),
        "rule": "whole fonts held out: test faces are never rendered for training",
        "train_faces": list(TRAIN_FACES),
        "test_faces": list(TEST_FACES),
        "jitter": JITTER,
        "image_size": SIZE,
        "render": f"cap height {_CAP} of the side, drawn at {_SS}x and box-filtered, centred on the ink box",
    }
