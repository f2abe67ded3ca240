"""Every hub family through the loader: a tiny pipeline of each (SD, SDXL, DiT, PixArt, SD3, Flux) is
saved to a folder and loaded back with ``load_model``, then generates and classifies under every
method with the same ``generate`` / ``classify``; the flow-matching models use their own target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bigain
from bigain import patch
from bigain.models import LoadedModel
from tests.tiny_pipelines import SAVERS

torch.set_num_threads(1)

SDXL_2X = ["down_blocks.1.attentions.0", "up_blocks.0.attentions.0", "up_blocks.0.attentions.1"]
#: family → (adapter name, prediction, sampler of its card, compressed by default)
EXPECTED = {
    "sd": (
        "unet",
        "epsilon",
        "euler",
        ["down_blocks.0.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1"],
    ),
    # the tiny SDXL has two levels: its 2× level (the first with attention) is also the mid block's
    "sdxl": ("unet", "epsilon", "euler", [*SDXL_2X, "mid_block.attentions.0"]),
    "dit": ("dit", "epsilon", "ddim", ["transformer_blocks.1", "transformer_blocks.2"]),
    "pixart": ("pixart", "epsilon", "dpm", [f"transformer_blocks.{i}" for i in range(1, 6)]),
    "sd3": ("sd3", "flow", "flow", [f"transformer_blocks.{i}" for i in (1, 2, 3)]),
    "flux": ("flux", "flow", "flow", ["transformer_blocks.1", *(f"single_transformer_blocks.{j}" for j in range(3))]),
}
METHODS = [bigain.ToMe(ratio=0.5), bigain.LGTM(ratio=0.5), bigain.ToDo(), bigain.IEKVD(alpha=0.8, alpha_end=1.2)]
FAST = {"n_pool": 2, "n_samples": (2,), "to_keep": (1,)}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def loaded(request, tmp_path_factory) -> tuple[str, LoadedModel]:
    family = request.param
    folder = SAVERS[family](tmp_path_factory.mktemp("hub") / f"tiny-{family}")
    # Flux has no native size (its card says 1024): work at 16 px, 8×8 latents, 4×4 packed tokens
    return family, bigain.load_model(folder, device="cpu", resolution=16 if family == "flux" else None)


def _condition(m: LoadedModel) -> int | str:
    return 1 if m.classes else "a cat"


def test_loads_as_its_family(loaded) -> None:
    family, m = loaded
    name, prediction, sampler, blocks = EXPECTED[family]
    assert m.backbone.name == name and m.prediction == prediction and m.card.sampler == sampler
    assert m.card.source == "local" and m.resolution == 16 and m.latent_size == 8
    for meth in METHODS:
        got = patch.compressed_blocks(m, meth)
        if name == "unet":  # every transformer block of the chosen attentions
            got = list(dict.fromkeys(b.rsplit(".transformer_blocks.", 1)[0] for b in got))
        assert got == blocks, (family, meth.label(), got)


def test_generate_under_every_method_and_remove_restores(loaded) -> None:
    family, m = loaded
    cond = _condition(m)
    base = bigain.generate(m, cond, steps=2, seed=0).array
    for meth in METHODS:
        out = bigain.generate(m, cond, method=meth, steps=2, seed=0).array
        assert out.shape == base.shape and np.isfinite(out).all()
        assert not np.array_equal(out, base), f"{family}: {meth.label()} changed nothing"
    assert np.array_equal(bigain.generate(m, cond, steps=2, seed=0).array, base)  # nothing left behind


def test_classify_ranks_with_the_models_target(loaded) -> None:
    _, m = loaded
    image = bigain.generate(m, _condition(m), steps=2, seed=0).images[0]
    classes = None if m.classes else ["cat", "dog", "car"]  # prompts: the card's "a photo of a {}."
    res = bigain.classify(m, image, classes=classes, method=bigain.LGTM(ratio=0.5), protocol=FAST, seed=0)
    assert np.isfinite(res.mean_errors).all() and len(res.ranking) == len(res.classes)
    # the first class's first error, recomputed by hand with the model's noise process and target
    x0 = m.encode(m.preprocess(image))
    t = int(res.eval_order[0])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    cond = m.condition([res.prompts[0]]) if classes else m.condition([0])
    with bigain.compress(m, bigain.LGTM(ratio=0.5)):
        pred = m.eps(m.noised(x0, noise, torch.tensor([t])), torch.tensor([t]), cond, fresh=True)
    err = (m.target(x0, noise, torch.tensor([t])) - pred).square().mean().item()
    assert res.errors[0, res.timesteps.index(t)] == pytest.approx(err, rel=1e-4)


def test_flow_noise_and_target() -> None:
    """x_t = (1 − σ) x0 + σ ε with σ = t / 1000 and the velocity ε − x0 (SD3 / Flux)."""

    class Flow(LoadedModel):
        def __init__(self) -> None:
            self.prediction = "flow"

    m, x0, eps = Flow(), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    t = torch.tensor([250, 1000])
    xt = m.noised(x0, eps, t)
    assert torch.allclose(xt[0], 0.75 * x0[0] + 0.25 * eps[0]) and torch.equal(xt[1], eps[1])
    assert torch.equal(m.target(x0, eps, t), eps - x0)


def test_samplers_match_the_prediction(loaded) -> None:
    _, m = loaded
    wrong = "ddim" if m.prediction == "flow" else "flow"
    with pytest.raises(ValueError, match="samples with"):
        m.scheduler(wrong)


def test_unsupported_pipeline_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    with pytest.raises(ValueError, match="unsupported pipeline 'KandinskyPipeline'; bigain supports"):
        bigain.load_model(tmp_path)
