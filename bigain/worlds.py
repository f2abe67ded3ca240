"""The small worlds the embedded models live in: data, split, classes and reference classifier.

* ``glyphs`` (:mod:`bigain.glyphs`): 26 capitals rendered from matplotlib's fonts at 32×32, whole
  fonts held out; the ``glyphs-dit`` / ``glyphs-unet`` models, 1024 tokens per compressed layer.
* ``digits`` (:mod:`bigain.digits`): scikit-learn's 8×8 digits at 16×16; the small ``digits-*``
  models the fast tests use.

A world is what an evaluation needs without knowing which one it is: ``load("train" | "test")``,
the class names, the image side and the reference classifier (``predict`` and ``features``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bigain.errors import BadInput


@dataclass(frozen=True)
class World:
    name: str
    classes: tuple[str, ...]
    size: int
    description: str
    _load: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    _reference: Callable[[], Any]
    _split: Callable[[], dict[str, Any]]
    reference_name: str
    #: (1, 1, H, W) light ink in [-1, 1] → (1, 1, size, size) framed as the training images (None: squash)
    frame: Callable[[torch.Tensor], torch.Tensor] | None = None

    def load(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, 1, size, size) in [-1, 1] and labels (N,) of ``part`` ("train" or "test")."""
        return self._load(part)

    def reference(self) -> Any:
        """The reference classifier: ``predict(images) → (N,) ids``, ``features(images) → (N, D)``."""
        return self._reference()

    def split_record(self) -> dict[str, Any]:
        return self._split()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _glyphs() -> World:
    from bigain import glyphs

    return World(
        "glyphs",
        glyphs.CLASSES,
        glyphs.SIZE,
        "capitals A–Z from matplotlib's fonts, 32×32, held-out fonts",
        glyphs.load,
        glyphs.reference,
        glyphs.split_record,
        "CNN (16/32/64 conv, 128 hidden) on the train fonts' jittered renderings",
        glyphs.frame,
    )


def _digits() -> World:
    from bigain import digits

    return World(
        "digits",
        tuple(str(i) for i in range(digits.NUM_CLASSES)),
        digits.SIZE,
        "scikit-learn's digits, 8×8 upsampled to 16×16",
        digits.load,
        digits.reference,
        digits.split_record,
        "MLP(128 ReLU) on 16x16 train split (+1-px shifts)",
    )


_BUILDERS: dict[str, Callable[[], World]] = {"glyphs": _glyphs, "digits": _digits}


def world(name: str) -> World:
    """The world called ``name`` ("glyphs" or "digits")."""
    if name not in _BUILDERS:
        raise BadInput(f"unknown world {name!r}; choose one of {sorted(_BUILDERS)}")
    return _BUILDERS[name]()


def world_of(model_name: str) -> World:
    """The world of an embedded model, by its card (``glyphs-dit`` → glyphs)."""
    from bigain.zoo import CARDS

    card = CARDS.get(model_name)
    if card is None or card.world is None:
        raise BadInput(f"{model_name!r} is not an embedded model with a bundled dataset")
    return world(card.world)
