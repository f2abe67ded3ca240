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


# ---- the reference classifier -----------------------------------------------------------------

#: Jittered renderings per (train font, letter) the reference classifier is trained on.
REFERENCE_BANK = 48
REFERENCE_DIR = "glyphs-reference"


class ReferenceNet(torch.nn.Module):
    """A small CNN (3 conv layers, 16/32/64 channels, then 128 hidden units): (N, 1, 32, 32) in
    [-1, 1] → (N, 26) logits. Its 128-d hidden layer is the feature space of FID_ref / KID_ref."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv = nn.Sequential(
            *[
                m
                for i, o in ((1, 16), (16, 32), (32, 64))
                for m in (nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            ]
        )
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(64 * (SIZE // 8) ** 2, 128), nn.ReLU())
        self.head = nn.Linear(128, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Reference:
    """The glyph reference classifier (:class:`ReferenceNet`, weights in ``assets/glyphs-reference``):
    labels generated samples ("recognised %") and gives the features of FID_ref, as
    :class:`bigain.digits.Reference` does for digits."""

    def __init__(self, net: ReferenceNet, record: dict) -> None:
        self.net = net.eval().requires_grad_(False)
        self.record = record

    @staticmethod
    def _check(images: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, SIZE, SIZE):
            raise ValueError(f"reference classifier expects (N, 1, {SIZE}, {SIZE}) images, got {tuple(x.shape)}")
        return x.clamp(-1, 1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 1, 32, 32) in [-1, 1] → (N,) predicted class ids."""
        x = self._check(images)
        return torch.cat([self.net(c).argmax(1) for c in x.split(256)]).numpy()

    @torch.no_grad()
    def features(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 1, 32, 32) → (N, 128) hidden-layer activations."""
        x = self._check(images)
        return torch.cat([self.net.features(c) for c in x.split(256)]).numpy().astype(np.float64)


def train_reference(out: Path, epochs: int = 4, seed: int = 0, quiet: bool = False) -> dict:
    """Train the reference classifier on the train fonts' jittered bank (deterministic on CPU) and
    write ``model.safetensors`` + ``training.json`` (test accuracy on the held-out fonts) to ``out``."""
    import json
    import time

    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = ReferenceNet()
    x, y = load("train", per_glyph=REFERENCE_BANK)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    curve = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for idx in order.split(128):
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        curve.append({"epoch": epoch + 1, "loss": total / len(x)})
        if not quiet:
            print(f"glyphs-reference epoch {epoch + 1}/{epochs} loss {curve[-1]['loss']:.4f}", flush=True)
    ref = Reference(net, {})
    acc = {}
    for name, per in (("test_plain", 1), ("test_jittered", 8)):
        xt, yt = load("test", per_glyph=per)
        acc[name] = float((ref.predict(xt) == yt.numpy()).mean())
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "model.safetensors"))
    record = {
        "model": REFERENCE_DIR,
        "architecture": "ReferenceNet: conv 16/32/64 (3x3, ReLU, max-pool 2) → 128 ReLU → 26",
        "epochs": epochs,
        "seed": seed,
        "bank_per_glyph": REFERENCE_BANK,
        "loss_curve": curve,
        "wall_s": time.perf_counter() - t0,
        "accuracy": acc,
        "split": split_record(),
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    """The shipped glyph reference classifier (``assets/glyphs-reference``)."""
    import json

    from safetensors.torch import load_file

    from bigain.zoo import assets_dir

    folder = assets_dir() / REFERENCE_DIR
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(  # an OSError, as ModelUnavailable (bigain.models imports this world)
            f"no glyph reference classifier in {folder}: run `python -m bigain train {REFERENCE_DIR}`"
        )
    net = ReferenceNet()
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return Reference(net, json.loads((folder / "training.json").read_text()))


# ---- framing an image the way the renderer frames a glyph ----------------------------------------

#: Ink heights (fraction of the side) the training renderings span; a glyph outside is rescaled.
_INK_RANGE = (0.5, 0.78)


def frame(x: torch.Tensor) -> torch.Tensor:
    """A light-ink-on-dark image (1, 1, H, W) in [-1, 1] of any size → (1, 1, SIZE, SIZE), framed as
    :func:`render` frames glyphs: centred on its ink box, and rescaled to the cap height when its ink is
    much larger or smaller than any training rendering (a letter drawn small in a big canvas, or
    filling it). A glyph already framed like the training data comes back as it would be resized."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ink = x[0, 0] > 0
    if not ink.any():
        return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    rows, cols = ink.any(1).nonzero()[:, 0], ink.any(0).nonzero()[:, 0]
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(h, w)  # the canvas scale the glyph was drawn at (square: the renderer's)
    height = (bottom - top) / side
    scale = SIZE / side
    if not _INK_RANGE[0] <= height <= _INK_RANGE[1]:
        scale = _CAP * SIZE / (bottom - top)
    scale = min(scale, 0.92 * SIZE / max(bottom - top, right - left))
    crop = x[..., top:bottom, left:right]
    nh, nw = max(1, round((bottom - top) * scale)), max(1, round((right - left) * scale))
    glyph = F.interpolate(crop, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    out = torch.full((1, 1, SIZE, SIZE), -1.0, dtype=x.dtype)
    y0, x0 = (SIZE - nh) // 2, (SIZE - nw) // 2
    out[..., y0 : y0 + nh, x0 : x0 + nw] = glyph
    return out.clamp(-1, 1)
