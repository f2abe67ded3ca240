"""Generation and the diffusion classifier on the shipped digits models and on tiny hub-format
pipelines: determinism, same noise for every method, records, threads, the §F protocol, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bigain
from bigain import digits
from bigain.models import load_model
from bigain.pipelines import ClassificationResult, GenerationResult, Protocol, classify, generate
from bigain.pipelines.generate import initial_noise
from tests.conftest import run_in_threads
from tests.test_models import tiny_dit, tiny_sd  # noqa: F401  (session fixtures)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dit():
    return load_model("digits-dit")


@pytest.fixture(scope="module")
def unet():
    return load_model("digits-unet")


@pytest.fixture(scope="module")
def test_images():
    return digits.load("test")


# ---- generation ------------------------------------------------------------------------------


def test_generate_result_and_determinism(dit) -> None:
    r = generate(dit, 7, seed=3, steps=4, num_images=2)
    assert isinstance(r, GenerationResult)
    assert len(r.images) == 2 and r.images[0].size == (16, 16) and r.images[0].mode == "RGB"
    assert r.array.shape == (2, 16, 16, 1) and r.array.min() >= 0 and r.array.max() <= 1
    assert r.n_calls == 4 and r.steps == 4 and r.guidance == dit.card.guidance and r.condition == ["7", "7"]
    assert r.per_call_s > 0 and r.wall_s >= r.denoiser_s > 0 and r.record is None
    assert isinstance(r.method, bigain.Baseline) and r.sampler == "ddim" and len(r.timesteps) == 4
    again = generate(dit, "7", seed=3, steps=4, num_images=2)
    assert np.array_equal(r.array, again.array)
    other = generate(dit, 7, seed=4, steps=4, num_images=2)
    assert not np.array_equal(r.array, other.array)


def test_same_noise_for_every_method_and_methods_differ(dit) -> None:
    a, b = initial_noise(dit, 2, seed=5), initial_noise(dit, 2, seed=5)
    assert torch.equal(a, b)
    base = generate(dit, 1, seed=5, steps=3)
    tome = generate(dit, 1, seed=5, steps=3, method="tome:ratio=0.5")
    assert not np.array_equal(base.array, tome.array)
    # ToMe's random destinations are seeded too: the run repeats exactly
    assert np.array_equal(tome.array, generate(dit, 1, seed=5, steps=3, method=bigain.ToMe(ratio=0.5)).array)
    assert not bigain.patch.active_method(dit).compresses  # nothing leaks out of the call


def test_generate_record_and_condition_list(unet) -> None:
    r = generate(unet, [0, 1, 2], steps=2, guidance=1.0, method=bigain.LGTM(ratio=0.7), record=True)
    assert r.n_calls == 2 and r.condition == ["0", "1", "2"]  # guidance 1: conditional branch only
    ev = [e for e in r.record.events if e.n_q < e.n_tokens]
    assert ev and all(e.h == e.w == unet.latent_size == 8 for e in ev) and ev[0].scores is not None


def test_generate_progress_and_errors(dit) -> None:
    seen: list[float] = []
    generate(dit, 2, steps=3, progress=lambda f, d: seen.append(f))
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="steps"):
        generate(dit, 2, steps=0)
    with pytest.raises(ValueError, match="guidance"):
        generate(dit, 2, guidance=-1)
    with pytest.raises(ValueError, match="unknown class"):
        generate(dit, "cat")
    with pytest.raises(ValueError, match="num_images"):
        generate(dit, [1, 2], num_images=3)
    with pytest.raises(ValueError, match="unknown method"):
        generate(dit, 1, method="fast")
    with pytest.raises(TypeError):
        generate(dit, 1, method=3)
    with pytest.raises(ValueError, match="sampler"):
        generate(dit, 1, sampler="heun")


def test_concurrent_generate_calls_with_different_methods_match_sequential_ones(dit) -> None:
    """The pipeline level: ``generate`` calls on one shared loaded model from several threads at once
    (each applying its own method, seeding, sampling) give exactly the images of the same calls one by one."""
    specs = ["baseline", "tome:ratio=0.7", "iekvd:alpha=0.8;alpha_end=1.2", "lgtm:ratio=0.5"]
    alone = {s: generate(dit, 4, seed=1, steps=3, method=s).array for s in specs}
    results = run_in_threads(lambda s: generate(dit, 4, seed=1, steps=3, method=s).array, specs, repeats=2)
    for s in specs:
        assert len(results[s]) == 2
        for out in results[s]:
            assert np.array_equal(out, alone[s]), s


def test_euler_sampler_on_digits(dit) -> None:
    r = generate(dit, 3, steps=3, sampler="euler")
    assert r.sampler == "euler" and np.isfinite(r.array).all()


# ---- classification --------------------------------------------------------------------------


def test_protocol_matches_the_paper() -> None:
    p = Protocol()
    assert p.pool() == list(range(25, 1000, 50))
    assert p.round_timesteps(0) == [125, 325, 525, 725, 925]
    assert p.round_timesteps(1) == p.pool()
    assert Protocol(n_pool=10, n_samples=(10,), to_keep=(1,)).pool() == list(range(50, 1000, 100))
    for bad in (dict(n_samples=(20, 5)), dict(to_keep=(5, 2)), dict(n_samples=(5,), to_keep=(5, 1)), dict(n_pool=0)):
        with pytest.raises(ValueError):
            Protocol(**bad)


def test_classify_digits_test_images(dit, test_images) -> None:
    x, y = test_images
    correct = 0
    for i in range(8):
        r = classify(dit, x[i], seed=i)
        correct += r.class_ids[r.prediction_index] == int(y[i])
    assert correct >= 7
    assert isinstance(r, ClassificationResult)
    assert r.errors.shape == (10, 10) and not np.isnan(r.errors).any()
    assert r.n_evals == 100 and r.n_calls == 1 and r.timesteps == list(range(50, 1000, 100))
    assert r.scores.sum() == pytest.approx(1.0) and r.ranking[0].cls == r.prediction
    errs = [row.mean_error for row in r.ranking]
    assert errs == sorted(errs) and r.ranking[0].score == max(r.scores)
    assert r.eliminated.count(None) == 1 and r.eliminated[r.prediction_index] is None and r.denoiser_s > 0


def test_classify_adaptive_rounds_and_paired_noise(unet, test_images) -> None:
    x, y = test_images
    proto = Protocol(n_pool=8, n_samples=(2, 8), to_keep=(3, 1))
    r = classify(unet, x[0], protocol=proto, batch_size=7)
    assert r.n_evals == 10 * 2 + 3 * 6 and r.n_calls == -(-20 // 7) + -(-18 // 7)
    assert [r.eliminated.count(k) for k in (None, 1, 0)] == [1, 2, 7]
    assert np.isnan(r.errors).sum() == 7 * 6
    assert r.eval_order[:2] == proto.round_timesteps(0)
    assert [row.eliminated_round for row in r.ranking[:3]] == [None, 1, 1]
    assert all(row.n_timesteps == 8 for row in r.ranking[:3]) and r.ranking[3].n_timesteps == 2
    # paired noise: the same seed gives the same errors whatever the candidate set
    sub = classify(unet, x[0], classes=[int(y[0]), (int(y[0]) + 1) % 10], protocol=proto)
    full = r.errors[[int(y[0])], : len(sub.timesteps)]
    assert np.allclose(sub.errors[0], full[0], atol=1e-5)


def test_classify_methods_and_inputs(dit, test_images) -> None:
    x, _ = test_images
    img = ((x[5, 0].numpy() + 1) * 127.5).astype(np.uint8)  # an H×W uint8 array
    base = classify(dit, img, classes=["3", "8", 5])
    assert base.classes == ["3", "8", "5"] and base.prediction in base.classes
    comp = classify(dit, img, classes=["3", "8", 5], method=bigain.ToDo())
    assert not np.allclose(base.errors, comp.errors)
    assert isinstance(comp.method, bigain.ToDo)


def test_classify_errors(dit, test_images) -> None:
    x, _ = test_images
    with pytest.raises(ValueError, match="at least two"):
        classify(dit, x[0], classes=["3"])
    with pytest.raises(ValueError, match="at least two"):
        classify(dit, x[0], classes=[])
    with pytest.raises(ValueError, match="duplicated"):
        classify(dit, x[0], classes=["3", 3])
    with pytest.raises(ValueError, match="unknown class"):
        classify(dit, x[0], classes=["3", "dog"])
    with pytest.raises(ValueError, match="list"):
        classify(dit, x[0], classes="35")
    with pytest.raises(ValueError, match="temperature"):
        classify(dit, x[0], temperature=0)
    with pytest.raises(TypeError):
        classify(dit, {"not": "an image"})


# ---- tiny hub-format pipelines through the same code -----------------------------------------

TINY = Protocol(n_pool=4, n_samples=(2, 4), to_keep=(2, 1))


def test_tiny_sd_generate_and_classify(tiny_sd) -> None:  # noqa: F811
    g = generate(tiny_sd, "a photo of a cat", steps=2, method="tome:ratio=0.5", seed=1)
    assert g.sampler == "euler" and g.images[0].size == (16, 16) and g.n_calls == 2
    r = classify(tiny_sd, g.images[0], classes=["cat", "dog", "car"], protocol=TINY, method="iekvd")
    assert r.prompts == ["a photo of a cat.", "a photo of a dog.", "a photo of a car."]
    assert r.n_evals == 3 * 2 + 2 * 2 and r.prediction in {"cat", "dog", "car"}
    custom = classify(tiny_sd, g.images[0], classes=["cat", "dog"], protocol=TINY, prompt_template="{}, a pet")
    assert custom.prompts == ["cat, a pet", "dog, a pet"]
    with pytest.raises(ValueError, match="free-text"):
        classify(tiny_sd, g.images[0])
    with pytest.raises(ValueError, match="duplicated"):
        classify(tiny_sd, g.images[0], classes=["cat", "Cat"])
    with pytest.raises(TypeError):
        generate(tiny_sd, 3)


def test_tiny_dit_generate_and_classify(tiny_dit) -> None:  # noqa: F811
    g = generate(tiny_dit, "goldfish", steps=2, num_images=2, method="lgtm:ratio=0.5")
    assert g.condition == ["goldfish", "goldfish"] and g.array.shape == (2, 16, 16, 3)
    r = classify(tiny_dit, g.images[0], protocol=TINY, method=bigain.ToDo())
    assert r.classes[1] == "goldfish" and len(r.classes) == 4 and r.class_ids == [0, 1, 2, 3]


def test_compile_mode_generates_what_eager_generates() -> None:
    """The execution mode changes how the denoiser runs, not what it computes (inductor on CPU)."""
    from bigain.methods import LGTM

    m = load_model("digits-dit")
    eager = generate(m, 3, method=LGTM(), seed=1, steps=2)
    compiled = generate(m, 3, method=LGTM(), seed=1, steps=2, mode="compile")
    np.testing.assert_allclose(compiled.array, eager.array, atol=1e-4)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        generate(m, 3, steps=1, mode="cudagraph")
    with pytest.raises(ValueError, match="eager mode"):
        generate(m, 3, steps=1, mode="compile", record=True)
