"""scikit-learn's bundled handwritten digits: the fixed split, 16×16 images in [-1, 1] and the
reference classifiers that judge generated samples.

Everything here is deterministic and offline. The split is the one every number in the repo
uses: ``train_test_split(indices, test_size=0.2, stratify=labels, random_state=0)`` on
``load_digits()`` (1437 train, 360 test images); test images are never used for training or tuning.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Side of the images the embedded models see (digits are 8×8, upsampled bilinearly).
SIZE = 16
NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_SIZE = 0.2


@dataclass(frozen=True)
class Split:
    """Indices into ``load_digits()`` (sorted) for the train and test parts."""

    train: np.ndarray
    test: np.ndarray


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def split() -> Split:
    """The fixed, stratified 80/20 split of the 1797 images."""
    from sklearn.model_selection import train_test_split

    _, labels = _raw()
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
    return Split(np.sort(train), np.sort(test))


def upsample(images8: np.ndarray | torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(N, 8, 8) raw digits in [0, 16] → (N, 1, size, size) float32 in [-1, 1], bilinear."""
    x = torch.as_tensor(np.asarray(images8), dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).clamp(-1, 1)


def load(part: str = "train", size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, size, size) in [-1, 1] and labels (N,) of ``part`` ("train", "test" or "all")."""
    images, labels = _raw()
    if part == "all":
        idx = np.arange(len(labels))
    elif part in ("train", "test"):
        idx = getattr(split(), part)
    else:
        raise ValueError(f"part must be 'train', 'test' or 'all', got {part!r}")
    return upsample(images[idx], size), torch.as_tensor(labels[idx])


def raw(part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Raw 8×8 pixels flattened (N, 64) in [0, 16] and labels, for the pixel baselines."""
    images, labels = _raw()
    idx = getattr(split(), part)
    return images[idx].reshape(len(idx), -1), labels[idx]


def split_record() -> dict:
    """What a training record stores about the data, so the split can be checked later."""
    s = split()
    return {
        "dataset": "sklearn.datasets.load_digits",
        "rule": "train_test_split(indices, test_size=0.2, stratify=labels, random_state=0)",
        "n_train": len(s.train),
        "n_test": len(s.test),
        "test_indices": s.test.tolist(),
        "image_size": SIZE,
        "resize": "bilinear from 8x8, align_corners=False, scaled to [-1, 1]",
    }


# ---- reference classifiers -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def logistic_baseline() -> dict:
    """Logistic regression on raw 8×8 pixels (train split) → its test accuracy, for comparison."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = raw("train")
    xte, yte = raw("test")
    clf = LogisticRegression(max_iter=5000, C=1.0)
    clf.fit(xtr / 16.0, ytr)
    pred = clf.predict(xte / 16.0)
    return {"model": "LogisticRegression(C=1, raw 8x8 pixels)", "correct": int((pred == yte).sum()), "n": len(yte)}


class Reference:
    """A small MLP (one hidden layer of 128 ReLU units) trained on the 16×16 train split, with
    light shift augmentation. It labels generated samples (conditional accuracy) and its hidden
    layer is the feature space of the FID/KID-style scores (not Inception: digits are not photos)."""

    def __init__(self, seed: int = 0) -> None:
        from sklearn.neural_network import MLPClassifier

        x, y = load("train")
        x, y = _shifted(x, y)
        self.mlp = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=seed, alpha=1e-3)
        self.mlp.fit(x.flatten(1).numpy(), y.numpy())

    @staticmethod
    def _flat(images: torch.Tensor | np.ndarray) -> np.ndarray:
        x = torch.as_tensor(images, dtype=torch.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[-2:] != (SIZE, SIZE) or x.shape[1] != 1:
            raise ValueError(f"reference classifier expects (N, 1, {SIZE}, {SIZE}) images, got {tuple(x.shape)}")
        return x.clamp(-1, 1).flatten(1).numpy()

    def predict(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 1, 16, 16) in [-1, 1] → (N,) predicted digits."""
        return self.mlp.predict(self._flat(images))

    def features(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, 1, 16, 16) → (N, 128) hidden-layer activations."""
        x = self._flat(images)
        return np.maximum(x @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0.0)


def _shifted(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images plus copies shifted by one pixel in each direction (border filled with -1)."""
    out, labels = [x], [y]
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        s = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        if dy:
            s[..., 0 if dy > 0 else -1, :] = -1
        if dx:
            s[..., :, 0 if dx > 0 else -1] = -1
        out.append(s)
        labels.append(y)
    return torch.cat(out), torch.cat(labels)


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    """The shared reference classifier (trained once per process, a few seconds)."""
    return Reference()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D). Dead ReLU
    units make the covariances singular, so both get a tiny ridge (1e-6·I) before the matrix root."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    ridge = 1e-6 * np.eye(a.shape[1])
    s1, s2 = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean[0] if isinstance(covmean, tuple) else covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel of KID, (x·y/D + 1)³."""
    d = a.shape[1]
    kxx = (a @ a.T / d + 1) ** 3
    kyy = (b @ b.T / d + 1) ** 3
    kxy = (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())
