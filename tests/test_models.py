"""Model cards, loading (shipped digits weights, tiny hub-format pipelines saved to a temporary
folder), the loaded-model interface and image input handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bigain
from bigain import digits
from bigain.models import CARDS, LoadedModel, ModelUnavailable, load_model, to_image, to_latent, to_model_image
from tests.tiny_pipelines import save_tiny_dit, save_tiny_sd

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> LoadedModel:
    return load_model(save_tiny_sd(tmp_path_factory.mktemp("hub") / "tiny-sd"), device="cpu")


@pytest.fixture(scope="session")
def tiny_dit(tmp_path_factory) -> LoadedModel:
    return load_model(save_tiny_dit(tmp_path_factory.mktemp("hub") / "tiny-dit"), device="cpu")


# ---- embedded models -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits-dit", "digits-unet"])
def test_shipped_digits_models(name: str) -> None:
    m = load_model(name)
    assert m is load_model(name, device="cpu", dtype="float32")  # cached
    assert m.card.source == "embedded" and m.classes == [str(i) for i in range(10)]
    f = m.space_to_depth  # the U-Net folds 2×2 pixels into channels, so its tokens are not redundant copies
    assert m.resolution == 16 and m.image_channels == 1 and f == {"digits-dit": 1, "digits-unet": 2}[name]
    assert m.latent_size * f == 16 and m.latent_channels == f * f
    assert bigain.is_patched(m)
    folder = Path(bigain.models.assets_dir()) / name
    assert (folder / "model.safetensors").stat().st_size <= 10 * 2**20
    rec = json.loads((folder / "training.json").read_text())
    assert rec["split"]["n_test"] == 360 and rec["steps"] > 0 and rec["loss_curve"]
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    z = m.encode(x)
    eps = m.eps(z, torch.tensor([10, 500, 900]), m.condition([0, "7", 3]))
    assert eps.shape == z.shape == (3, f * f, 16 // f, 16 // f) and torch.isfinite(eps).all()
    assert torch.equal(m.decode(z), x)
    assert m.null_condition(2).keys() == m.condition([1, 2]).keys()


def test_digits_dit_default_blocks() -> None:
    m = load_model("digits-dit")
    assert m.card.blocks == (1, 2, 3)
    names = bigain.compressed_blocks(m, bigain.ToMe(ratio=0.5))
    assert len(names) == 3 and not any(n.startswith("transformer_blocks.0.") for n in names)


def test_digits_unet_compresses_its_top_level() -> None:
    m = load_model("digits-unet")
    tokens: dict[str, int] = {}
    blocks = {n: b for n, b in m.denoiser.named_modules() if type(b).__name__ == "BasicTransformerBlock"}
    hooks = [
        b.attn1.register_forward_hook(lambda mod, a, o, n=n: tokens.__setitem__(n, o.shape[1]))
        for n, b in blocks.items()
    ]
    m.eps(m.encode(torch.zeros(1, 1, 16, 16)), 500, m.condition([3]))
    for h in hooks:
        h.remove()
    top = {n for n, k in tokens.items() if k == m.latent_size**2}
    assert max(tokens.values()) == 64  # 8×8 latent tokens, each a distinct 2×2 pixel cell
    assert set(bigain.compressed_blocks(m, bigain.LGTM())) == top  # max_downsample=1 → exactly that level


#: Lower bounds on the shipped glyph models, a little under what ``python -m bigain eval replication``
#: measured on the same held-out fonts (assets/eval/glyphs-*.md: top-1 92% / 100% on 26 test glyphs; 17 and 14
#: of these 26 samples recognised when written): (classified of 8 test glyphs, samples the reference recognises).
GLYPH_QUALITY = {"glyphs-dit": (7, 14), "glyphs-unet": (7, 12)}


@pytest.mark.parametrize("name", sorted(GLYPH_QUALITY))
def test_glyph_models_read_and_draw_fonts_they_never_saw(name: str) -> None:
    from bigain import glyphs
    from bigain.evaluate.digits import balanced_subset

    torch.set_num_threads(1)
    m = load_model(name)
    x, y = glyphs.load("test")  # the five held-out fonts
    idx = balanced_subset(y.numpy(), 8)  # letters spread over the alphabet, the fonts in turn
    right = sum(bigain.classify(m, x[i], seed=int(i)).prediction == m.classes[int(y[i])] for i in idx)
    samples = bigain.generate(m, list(m.classes), seed=0, num_images=26)  # one per class, the card's sampler
    seen = glyphs.reference().predict(torch.from_numpy(samples.array[..., 0])[:, None] * 2 - 1)
    drawn = int((seen == np.arange(26)).sum())
    least_right, least_drawn = GLYPH_QUALITY[name]
    assert right >= least_right and drawn >= least_drawn, (name, right, drawn)


@pytest.mark.parametrize("name", ["glyphs-dit", "glyphs-unet"])
def test_glyph_models_compress_1024_tokens_everywhere_they_compress(name: str) -> None:
    from bigain import glyphs

    m = load_model(name)
    assert m.classes == list(glyphs.CLASSES) and m.resolution == 32 and m.image_channels == 1
    folder = Path(bigain.models.assets_dir()) / name
    assert (folder / "model.safetensors").stat().st_size <= 20 * 2**20
    rec = json.loads((folder / "training.json").read_text())
    assert rec["split"]["test_faces"] == list(glyphs.TEST_FACES)  # the split is recorded with the model
    assert not set(rec["split"]["train_faces"]) & set(glyphs.TEST_FACES)
    assert rec.get("wall_s_total", rec["wall_s"]) <= 2 * 3600  # every stage together, on one CPU thread
    assert rec["loss_curve"][-1]["loss"] <= rec["loss_curve"][0]["loss"]
    for method in (bigain.ToMe(ratio=0.5), bigain.LGTM(ratio=0.5), bigain.ToDo(), bigain.IEKVD()):
        seen: dict[str, int] = {}
        sites = {n: b.attn1 for n, b in m.denoiser.named_modules() if type(b).__name__ == "BasicTransformerBlock"}
        compressed = set(bigain.compressed_blocks(m, method))
        hooks = [
            a.register_forward_pre_hook(
                lambda mod, args, kw, n=n, seen=seen: seen.__setitem__(n, args[0].shape[1]),
                with_kwargs=True,
            )
            for n, a in sites.items()
        ]
        try:
            m.eps(m.encode(torch.zeros(1, 1, 32, 32)), 500, m.condition(["E"]))
        finally:
            for h in hooks:
                h.remove()
        assert compressed and compressed <= set(seen)
        assert {seen[n] for n in compressed} == {1024}, (name, method.name)  # 32×32 tokens reach every target


def test_space_to_depth_is_a_lossless_pixel_permutation() -> None:
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    z = to_latent(x, 2)
    assert z.shape == (2, 4, 8, 8) and torch.equal(to_image(z, 2), x)
    assert torch.equal(z.flatten().sort().values, x.flatten())  # a permutation: i.i.d. noise stays i.i.d.
    assert torch.equal(z[0, :, 0, 0], x[0, 0, :2, :2].flatten())  # channel = position in the 2×2 cell
    assert to_latent(x, 1) is x and to_image(x, 1) is x


def test_split_is_fixed_and_disjoint() -> None:
    s = digits.split()
    assert len(s.train) == 1437 and len(s.test) == 360
    assert not set(s.train) & set(s.test)
    x, y = digits.load("test")
    assert x.shape == (360, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert np.bincount(y.numpy()).min() >= 35  # stratified


def test_class_resolution_and_errors() -> None:
    m = load_model("digits-dit")
    assert m.class_id(7) == m.class_id("7") == 7
    with pytest.raises(ValueError, match="unknown class"):
        m.class_id("cat")
    with pytest.raises(ValueError, match="out of range"):
        m.class_id(10)
    with pytest.raises(TypeError):
        m.class_id(2.5)
    with pytest.raises(ValueError):
        m.condition([])


def test_unknown_and_missing_models(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(ModelUnavailable, match=r"model_index\.json"):
        load_model(tmp_path)
    with pytest.raises(TypeError):
        load_model(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        load_model("digits-dit", dtype="int8")
    monkeypatch.setenv("BIGAIN_ASSETS", str(tmp_path))
    bigain.models._load_cached.cache_clear()
    try:
        with pytest.raises(ModelUnavailable, match=r"python -m bigain\.train digits-unet"):
            load_model("digits-unet")
    finally:
        bigain.models._load_cached.cache_clear()


def test_hub_model_missing_offline(tmp_path: Path, monkeypatch) -> None:
    """No network and an empty cache: one clear sentence saying how to get the weights."""
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailable, match="hf download facebook/DiT-XL-2-256") as err:
        load_model("dit-xl-2-256", device="cpu")
    assert isinstance(err.value, OSError) and "\n" not in str(err.value)


def test_cards() -> None:
    hub = {"sd2-base", "sdxl-base", "dit-xl-2-256", "dit-xl-2-512", "pixart-alpha-512", "pixart-sigma-1024"}
    embedded = {"glyphs-dit", "glyphs-unet", "digits-dit", "digits-unet"}
    assert set(CARDS) == embedded | {"sd3-medium", "flux-schnell"} | hub
    assert {n for n, c in CARDS.items() if c.source == "embedded"} == embedded
    assert {CARDS[n].world for n in embedded} == {"glyphs", "digits"}
    assert {c.sampler for c in CARDS.values() if c.name in ("sd3-medium", "flux-schnell")} == {"flow"}
    assert CARDS["flux-schnell"].steps == 4 and CARDS["flux-schnell"].guidance == 1.0  # distilled: no CFG
    assert CARDS["sd2-base"].sampler == "euler" and CARDS["sd2-base"].prompt_template == "a photo of a {}."
    assert CARDS["dit-xl-2-512"].resolution == 512 and CARDS["dit-xl-2-256"].protocol["n_samples"] == (5, 20)


# ---- tiny hub-format pipelines ---------------------------------------------------------------


def test_tiny_sd_loads_through_the_same_code(tiny_sd: LoadedModel) -> None:
    m = tiny_sd
    assert m.backbone.name == "unet" and m.card.conditioning == "prompts" and m.classes is None
    assert m.card.source == "local" and m.resolution == 16 and m.latent_size == 8
    img = m.preprocess(Image.new("RGB", (40, 24), (200, 10, 10)))
    assert img.shape == (1, 3, 16, 16)
    z = m.encode(img)
    assert z.shape == (1, 4, 8, 8)
    assert m.decode(z).shape == (1, 3, 16, 16)
    cond = m.condition(["a cat", "a dog"])
    assert cond["encoder_hidden_states"].shape == (2, 16, 16)
    assert m.eps(z.expand(2, -1, -1, -1), 500, cond).shape == (2, 4, 8, 8)
    with pytest.raises(TypeError):
        m.condition([3])
    assert type(m.scheduler()).__name__ == "EulerDiscreteScheduler"
    assert m.scheduler() is not m.scheduler()  # a fresh copy per call


def test_tiny_dit_labels_and_learned_sigma(tiny_dit: LoadedModel) -> None:
    m = tiny_dit
    assert m.backbone.name == "dit" and m.classes[1] == "goldfish" and m.null_label == 4
    assert m.class_id("Tinca tinca") == 0 and m.class_id("GOLDFISH") == 1
    z = torch.randn(2, 4, 8, 8)
    assert m.eps(z, torch.tensor([3, 999]), m.condition([0, 3])).shape == (2, 4, 8, 8)  # σ channels dropped
    assert type(m.scheduler()).__name__ == "DDIMScheduler"


# ---- image input -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "I;16", "I", "F", "1"])
def test_preprocess_any_pil_mode(mode: str) -> None:
    base = Image.new("RGB", (30, 20), (255, 255, 255))
    base.paste((0, 0, 0), (10, 5, 20, 15))  # a dark mark on white
    img = base.convert(mode)
    for size, channels, dig in ((16, 1, True), (32, 3, False)):
        x = to_model_image(img, size, channels, digits=dig)
        assert x.shape == (1, channels, size, size) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    # digits: dark ink on white is inverted to light ink on dark
    x = to_model_image(base, 16, 1, digits=True)
    assert x[0, 0, 8, 8] > x[0, 0, 0, 0]


def test_preprocess_arrays_paths_and_errors(tmp_path: Path) -> None:
    arr = (np.random.default_rng(0).random((12, 9)) * 255).astype(np.uint8)
    assert to_model_image(arr, 16, 1, digits=True).shape == (1, 1, 16, 16)
    assert to_model_image(arr.astype(np.float32) / 255, 16, 3).shape == (1, 3, 16, 16)
    assert to_model_image(np.zeros((5, 5, 4), np.uint8), 8, 3).shape == (1, 3, 8, 8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    assert to_model_image(str(path), 16, 1).shape == (1, 1, 16, 16)
    assert to_model_image(path, 16, 1).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="no image file"):
        to_model_image(tmp_path / "missing.png", 16, 1)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        to_model_image(tmp_path / "bad.png", 16, 1)
    with pytest.raises(TypeError):
        to_model_image(12, 16, 1)
    with pytest.raises(ValueError):
        to_model_image(np.zeros((2, 3, 4, 5)), 16, 1)
    with pytest.raises(ValueError, match="NaN"):
        to_model_image(np.full((4, 4), np.nan), 16, 1)
