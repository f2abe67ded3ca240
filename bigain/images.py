"""Image input and the pixel-space 'autoencoder': any PIL mode, array, tensor or file → the model's
input range, and the lossless space-to-depth of the embedded U-Net."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from bigain.errors import BadInput, BadType


def to_latent(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Space-to-depth: (B, C, R, R) → (B, C·f², R/f, R/f); f = 1 is the identity. It is a fixed, exactly
    invertible 'autoencoder' (a permutation of pixels, so Gaussian noise stays i.i.d. Gaussian)."""
    return F.pixel_unshuffle(images, factor) if factor > 1 else images


def to_image(latents: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of :func:`to_latent`."""
    return F.pixel_shuffle(latents, factor) if factor > 1 else latents


#: the largest image accepted (pixels): bigger ones are refused before they are decoded
MAX_PIXELS = 4096 * 4096
#: the longest side an input is decoded / kept at: twice the largest model input (1024 px), so a 12-MP
#: phone photo is accepted but is never turned into float arrays at full size (JPEGs decode reduced)
MAX_SIDE = 2048


def check_size(width: int, height: int, what: str = "the image") -> None:
    """Refuse images with no pixels or more than :data:`MAX_PIXELS` (decompression bombs included)."""
    if width < 1 or height < 1:
        raise BadInput(f"{what} has no pixels ({width}×{height})")
    if width * height > MAX_PIXELS:
        raise BadInput(f"{what} is {width}×{height} pixels; at most {MAX_PIXELS / 1e6:.1f} megapixels are accepted")


def read_image(path: str | os.PathLike) -> Any:
    """A PIL image from a file, its size checked from the header before anything is decoded; one
    sentence saying what is wrong with the file otherwise (missing, empty, not an image, truncated)."""
    from PIL import Image

    path = Path(path)
    name = path.name or str(path)
    if not path.is_file():
        raise BadInput(f"no image file at {name}")
    if path.stat().st_size == 0:
        raise BadInput(f"{name} is an empty file, not an image")
    try:
        with Image.open(path) as im:
            check_size(*im.size, what=name)
            im.verify()  # checksums and truncation, before decoding
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (MAX_SIDE, MAX_SIDE))  # DCT scaling: decodes at 1/2, 1/4 or 1/8 size
            im.load()
            decoded = im.copy()
    except BadInput:
        raise
    except Image.DecompressionBombError as err:
        raise BadInput(f"{name} claims more pixels than PIL will decode ({err})") from err
    except Image.UnidentifiedImageError as err:
        raise BadInput(f"{name} is not an image file PIL can read (PNG, JPEG, WebP, TIFF, …)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise BadInput(f"{name} is truncated or corrupt and could not be decoded ({err})") from err
    return _bounded(decoded)


def _bounded(image: Any) -> Any:
    """The image with its longest side at most :data:`MAX_SIDE` (a reduced copy; smaller ones as they are)."""
    if max(image.size) <= MAX_SIDE:
        return image
    # PIL resamples 16-bit grey only as 32-bit integers ("I"); the values, and their scale, stay the same
    small = image.convert("I") if image.mode.startswith("I;16") else image.copy()
    small.thumbnail((MAX_SIDE, MAX_SIDE))
    return small


def _upright(image: Any) -> Any:
    """The image as it is meant to be seen: a camera's EXIF orientation applied (a phone photo stored
    rotated, tag 6, would otherwise be classified lying on its side); the tag is dropped, so twice is once."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image) or image
    except (OSError, ValueError, SyntaxError):  # a malformed EXIF block: keep the pixels as stored
        return image


def _finite(arr: np.ndarray, what: str = "the image") -> np.ndarray:
    if not np.isfinite(arr).all():
        raise BadInput(f"{what} has NaN or infinite values")
    return arr


def _as_array(image: Any) -> np.ndarray:
    """PIL image, path, numpy array → float array (H, W, C) in [0, 1]; RGBA/LA are composited on white."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        check_size(*image.size)
        image = _bounded(_upright(image))
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = _finite(np.asarray(image, dtype=np.float64))
            top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
            return (np.clip(arr / (top if image.mode != "F" or arr.max() > 1 else 1.0), 0, 1))[..., None]
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(bg, rgba)
        image = image.convert("RGB")
        return np.asarray(image, dtype=np.float64) / 255.0
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
            raise BadInput(f"an image array must be H×W or H×W×C with C in (1, 3, 4), got shape {image.shape}")
        check_size(arr.shape[1], arr.shape[0])
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float64) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float64) / 65535.0
        elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
            arr = _finite(arr.astype(np.float64), "the image array")
            lo, hi = arr.min(), arr.max()
            arr = (arr + 1) / 2 if lo < 0 else (arr if hi <= 1 else arr / 255.0)
        else:
            raise BadType(f"unsupported image array dtype {arr.dtype}")
        if arr.shape[-1] == 4:  # straight alpha over white
            arr = arr[..., :3] * arr[..., 3:] + (1 - arr[..., 3:])
        return np.clip(arr, 0, 1)
    raise BadType(
        f"an image must be a PIL image, a numpy array, a torch tensor or a file path, not {type(image).__name__}"
    )


def to_model_image(
    image: Any,
    size: int,
    channels: int,
    digits: bool = False,
    frame: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Any supported image → (1, channels, size, size) float32 in [-1, 1].

    Photos: resize the short side (bicubic, antialiased) and centre-crop, as the paper's
    pre-processing. Digits (``digits=True``): grayscale, squashed to size×size, and inverted when
    the border is brighter than the centre, because the models saw light ink on a dark ground; ``frame``
    (the glyph world's :func:`bigain.glyphs.frame`) then takes the place of the squash, at the input's size.
    A torch tensor is taken as already in [-1, 1] with shape (C, H, W) or (1, C, H, W)."""
    if isinstance(image, torch.Tensor):
        if image.numel() == 0:
            raise BadInput(f"the image tensor is empty (shape {tuple(image.shape)})")
        if image.is_complex() or image.dtype == torch.bool:
            raise BadType(f"an image tensor must be real-valued, got {image.dtype}")
        x = image.detach().float().cpu()
        if not torch.isfinite(x).all():
            raise BadInput("the image tensor has NaN or infinite values")
        x = x[None] if x.ndim == 3 else x
        if x.ndim == 2:
            x = x[None, None]
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] not in (1, 3):
            raise BadInput(
                f"an image tensor must be (C, H, W) or (1, C, H, W) with C in (1, 3), got {tuple(image.shape)}"
            )
        check_size(x.shape[-1], x.shape[-2])
    else:
        arr = _as_array(image)
        x = torch.from_numpy(arr).float().permute(2, 0, 1)[None] * 2 - 1
    if x.shape[1] == 3 and channels == 1:
        x = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if digits and frame is not None:
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1).mean()
        return frame(-x if border > x.mean() else x).contiguous()
    if digits:
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1).mean()
        if border > x.mean():
            x = -x
        return x.clamp(-1, 1).contiguous()
    scale = size / min(h, w)
    if (h, w) != (size, size):
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x.clamp(-1, 1).contiguous()
