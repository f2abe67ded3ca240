"""Figure 6 inside the model (bigain.explain.features) on the shipped digits models (8×8 = 64 tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bigain import explain, viz
from bigain.cli import main
from bigain.errors import BadInput
from bigain.explain import features
from bigain.models import load_model
from bigain.patch import active_method, compressed_blocks

MODELS = ("digits-dit", "digits-unet")


@pytest.fixture(scope="module", params=MODELS)
def result(request: pytest.FixtureRequest) -> features.Figure6Inside:
    return explain.figure6_inside(load_model(request.param), 3, seed=0)


def test_shapes_and_the_default_layer(result: features.Figure6Inside) -> None:
    model = load_model(result.model)
    assert result.block == compressed_blocks(model.denoiser, features.methods_for(0.75)["lgtm"])[0]
    assert (result.h, result.w) == (8, 8) and result.t == 200 and result.ratio == 0.75
    assert result.image.shape == (16, 16) and 0 <= result.image.min() <= result.image.max() <= 1
    for a in (result.energy, result.edge, result.smooth):
        assert a.shape == (8, 8)
    assert list(result.methods) == list(features.KEYS)
    for m in result.methods.values():
        assert m.error.shape == (8, 8) and np.isfinite(m.error).all()
    for key in ("tome", "lgtm"):
        m = result.methods[key]
        assert m.groups.shape == (64,) and m.merged.shape == (8, 8)
        assert m.n_q == m.n_kv == 16  # 75% of 64 merged away
        assert set(np.unique(m.merged)) <= {0, 1, 2} and (m.merged == 1).sum() == 48
    for key in ("todo", "iekvd", "freqkv-high", "freqkv-low"):
        assert (result.methods[key].n_q, result.methods[key].n_kv) == (64, 16)
        assert result.methods[key].groups is None
    assert json.loads(json.dumps(result.to_json()))["methods"][1]["key"] == "tome"
    assert "| L-GTM r=0.75 |" in result.table()
    assert active_method(model) is not None and not active_method(model).compresses  # left as it was


def test_uncompressed_is_exact_and_methods_are_not(result: features.Figure6Inside) -> None:
    base = result.methods["baseline"]
    assert base.layer == base.edge == base.smooth == base.eps == 0.0
    assert not base.error.any()
    for key in features.KEYS[1:]:
        m = result.methods[key]
        assert m.input_drift == 0.0  # nothing before the first compressed layer is compressed
        assert 0 < m.layer < 10 and m.edge > 0 and m.smooth > 0 and m.eps > 0, key
    # the two Table-12 extremes keep different tokens, so they give different outputs
    assert result.methods["freqkv-high"].layer != result.methods["freqkv-low"].layer


def test_edge_and_smooth_masks_partition_as_documented(result: features.Figure6Inside) -> None:
    edge, smooth, energy = result.edge, result.smooth, result.energy
    assert edge.sum() == 64 // 4 and smooth.sum() == 64 // 2 and not (edge & smooth).any()
    assert energy[edge].min() >= energy[~edge].max()  # the top quarter
    assert energy[smooth].max() <= energy[~smooth & ~edge].min()  # the bottom half
    # ties break by position, so the counts hold on a flat map too
    e, s = features.masks(np.zeros((4, 4)))
    assert (e.sum(), s.sum(), (e & s).any()) == (4, 8, False)


def test_deterministic_by_seed() -> None:
    model = load_model("digits-dit")
    a = explain.figure6_inside(model, "3", seed=1)
    b = explain.figure6_inside(model, "3", seed=1)
    c = explain.figure6_inside(model, "3", seed=2)
    assert a.rows() == b.rows()
    assert np.array_equal(a.methods["tome"].groups, b.methods["tome"].groups)
    assert a.rows() != c.rows()


def test_image_source_is_a_parameter() -> None:
    model = load_model("digits-unet")
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:12, 7:9] = 1.0  # a bar: strong edges on a flat ground
    r = explain.figure6_inside(model, 1, image=x, ratio=0.5)
    assert r.source == "the given image" and r.image.max() == 1.0
    assert r.methods["tome"].n_q == 32
    r2 = explain.figure6_inside(model, 1, image=lambda m, c, s: x * 0.5, ratio=0.5)
    assert r2.image.max() == 0.75


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 0.9}, "ratio must be in (0, 0.75]"),
        ({"ratio": 0.0}, "ratio must be in (0, 0.75]"),
        ({"condition": "x"}, "unknown class 'x'"),
        ({"condition": 12}, "class index 12 out of range"),
        ({"t": 1000}, "t must be an integer in [0, 999]"),
        ({"block": "nope"}, "block must be one of the compressed layers"),
        ({"image": "noise"}, "image must be 'test', 'generated'"),
    ],
)
def test_bad_inputs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    args = {"condition": 3, **kwargs}
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        explain.figure6_inside(load_model("digits-dit"), **args)


def test_figure_and_cli(result: features.Figure6Inside, tmp_path: Path) -> None:
    img = viz.figure_to_image(explain.figure6_inside_figure(result))
    assert img.width > 600 and img.height > 300
    if result.model != "digits-dit":
        return
    out, js = tmp_path / "f6.png", tmp_path / "f6.json"
    assert main(["inside-figure6", "--model", "digits-dit", "--out", str(out), "--json", str(js)]) == 0
    assert out.is_file() and json.loads(js.read_text())["methods"][2]["key"] == "lgtm"
    assert main(["inside-figure6", "--model", "digits-dit", "--ratio", "0.9", "--out", str(out)]) == 2


def test_the_learn_tab_section() -> None:
    import importlib

    learn = importlib.import_module("bigain.ui.learn")  # the package exports a function of that name

    assert {"digits-dit", "digits-unet"} <= set(learn.inside_models())
    fig, text = learn.figure6_inside("digits-unet", "7", 0.75, 0)
    assert fig is not None and "| Freq-KV s=2 low |" in text and "digits-unet" in text
    with pytest.raises(Exception, match="Model must be one of"):
        learn.figure6_inside("sd2-base", "7")
