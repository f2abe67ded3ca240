"""Figures and the pure "explain" computations behind the app's pictures (no model needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from bigain import explain, viz
from bigain.explain import compare
from bigain.methods import IEKVD, LGTM, SiTo, ToDo, ToMe
from bigain.ops.laplacian import laplacian_score


def _digit(size: int = 16) -> Image.Image:
    """A synthetic stroke: a bright ring on black, as a grey PIL image."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    return Image.fromarray((255 * (np.abs(r - size / 4) < 1.5)).astype(np.uint8), mode="L")


def _png(fig: Figure) -> Image.Image:
    assert isinstance(fig, Figure)
    img = viz.figure_to_image(fig, dpi=40)
    assert img.width > 50 and img.height > 50
    return img


# ---- display images -------------------------------------------------------------------------


def test_enlarge_is_integer_nearest_and_lossless() -> None:
    img = _digit()
    big = viz.enlarge(img, 256)
    assert big.size == (256, 256)
    np.testing.assert_array_equal(np.asarray(big)[::16, ::16], np.asarray(img))
    assert viz.enlarge(big, 64) is big  # already large enough


def test_difference_image_black_when_identical_and_checks_sizes() -> None:
    img = _digit().convert("RGB")
    same = np.asarray(viz.difference_image(img, img.copy(), min_side=16))
    assert same.max() <= np.asarray(viz.difference_image(img, Image.new("RGB", img.size), min_side=16)).max()
    black = (np.asarray(viz.colormaps[viz.DIFF_CMAP](0.0)[:3]) * 255).round()
    np.testing.assert_allclose(same.reshape(-1, 3), np.broadcast_to(black, (16 * 16, 3)), atol=1)
    with pytest.raises(ValueError, match="sizes"):
        viz.difference_image(img, img.resize((8, 8)))


def test_as_array_modes() -> None:
    for mode in ("L", "RGB", "RGBA", "P", "1"):
        a = viz.as_array(_digit().convert(mode))
        assert a.min() >= 0 and a.max() <= 1 and a.ndim in (2, 3)
    with pytest.raises(ValueError, match="image"):
        viz.as_array(np.zeros((4, 4, 2)))


# ---- figures ----------------------------------------------------------------------------------


def test_gate_and_merge_figures_from_a_real_merge() -> None:
    tokens = explain.image_tokens(_digit(), 16)
    choice = explain.merge_choice(tokens, LGTM(ratio=0.5))
    _png(viz.gate_figure(_digit(), choice["scores"], 16, 16, choice["dst"]))
    fig = viz.merge_figure(_digit(), choice["groups"], 16, 16, choice["dst"])
    assert f"→ {256 - choice['r']} after merging" in fig.axes[0].get_title()
    _png(fig)
    with pytest.raises(ValueError, match="8x8"):
        viz.gate_figure(_digit(), np.zeros(10), 8, 8)


def test_group_colors_share_colour_within_a_group() -> None:
    groups = np.array([0, 0, 2, 3, 3, 3])  # token 2 stayed alone
    rgba, merged = viz.group_colors(groups)
    assert merged.tolist() == [0, 3]
    np.testing.assert_array_equal(rgba[0], rgba[1])
    np.testing.assert_array_equal(rgba[3], rgba[5])
    assert not np.allclose(rgba[0], rgba[3])
    assert rgba[2, 3] == 0  # transparent: not merged


def test_kv_frequency_choices_and_speed_figures() -> None:
    figs = explain.learn_figures(_digit(), grid=8, ratio=0.5, factor=2, alpha=1.2)
    assert len(figs) == 3
    for f in figs:
        _png(f)
    _png(viz.speed_figure(["Baseline", "ToMe r=0.5"], [1.0, 1.3], [1.0, 0.8]))


def _fake_result(pred: str, rng: np.random.Generator) -> SimpleNamespace:
    classes = [str(i) for i in range(10)]
    errors = rng.uniform(0.1, 1.0, (10, 5))
    errors[5:, 3:] = np.nan  # pruned classes: not evaluated at late timesteps
    ranking = [SimpleNamespace(cls=c) for c in [pred, *[c for c in classes if c != pred]]]
    return SimpleNamespace(classes=classes, timesteps=[900, 100, 500, 300, 700], errors=errors, ranking=ranking,
                           prediction=pred)  # fmt: skip


def test_error_figure_one_panel_per_method_with_nan() -> None:
    rng = np.random.default_rng(0)
    fig = viz.error_figure({"Baseline": _fake_result("3", rng), "L-GTM r=0.7": _fake_result("5", rng)})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["Baseline: predicts 3", "L-GTM r=0.7: predicts 5"]
    _png(fig)
    with pytest.raises(ValueError):
        viz.error_figure({})


def test_short_block() -> None:
    assert viz.short_block("down_blocks.0.attentions.1.transformer_blocks.0") == "down 0 · attn 1 · block 0"
    assert viz.short_block("transformer_blocks.3") == "block 3"


# ---- explain: the pictures' numbers -----------------------------------------------------------


def test_frequency_parts_of_a_flat_image() -> None:
    parts = explain.frequency_parts(Image.new("L", (32, 32), 128), grid=8)
    np.testing.assert_allclose(parts.low, parts.tokens, atol=1e-6)
    np.testing.assert_allclose(parts.high, 0.5, atol=1e-6)
    assert parts.score[1:-1, 1:-1].max() < 1e-6  # interior of a flat image has no detail
    with pytest.raises(ValueError, match="grid"):
        explain.frequency_parts(_digit(), grid=7)


def test_frequency_parts_low_plus_high_is_the_image() -> None:
    parts = explain.frequency_parts(_digit(), grid=16)
    assert parts.tokens.shape == parts.low.shape == parts.high.shape == (16, 16)
    ref = laplacian_score(torch.as_tensor(parts.tokens).reshape(1, 256, 1), 16, 16)[0].reshape(16, 16)
    np.testing.assert_allclose(parts.score, ref.numpy(), atol=1e-6)
    stretch = (parts.high - 0.5) / (parts.tokens - parts.low + 1e-12)
    edge = np.abs(parts.tokens - parts.low) > 1e-3
    assert edge.any() and np.allclose(stretch[edge], stretch[edge][0], rtol=1e-3)  # one scale: low + high/k = x


def test_lgtm_destinations_are_the_smoothest_token_of_each_cell() -> None:
    tokens = explain.image_tokens(_digit(), 16)
    c = explain.merge_choice(tokens, LGTM(ratio=0.5))
    cells = c["scores"].reshape(8, 2, 8, 2).transpose(0, 2, 1, 3).reshape(64, 4)
    dst_scores = c["scores"][c["dst"]]
    np.testing.assert_allclose(np.sort(dst_scores), np.sort(cells.min(1)))
    assert len(np.unique(c["groups"])) == 256 - c["r"] == 128
    t = explain.merge_choice(tokens, ToMe(ratio=0.5), seed=1)
    assert t["scores"] is None and len(t["dst"]) == 64
    np.testing.assert_array_equal(t["dst"], explain.merge_choice(tokens, ToMe(ratio=0.5), seed=1)["dst"])
    # the method's own scorer decides (Table 8's variants too), not a copy of the Laplacian rule
    v = explain.merge_choice(tokens, LGTM(ratio=0.5, scorer="variance"))
    vcells = v["scores"].reshape(8, 2, 8, 2).transpose(0, 2, 1, 3).reshape(64, 4)
    np.testing.assert_allclose(np.sort(v["scores"][v["dst"]]), np.sort(vcells.min(1)))
    assert not np.allclose(v["scores"], c["scores"])


def test_kv_choice_nearest_average_and_blend() -> None:
    tokens = explain.image_tokens(_digit(), 16)
    todo = explain.kv_choice(tokens, ToDo(factor=2))
    np.testing.assert_allclose(todo["nearest"].reshape(-1), tokens.reshape(-1)[todo["kept"]])
    np.testing.assert_allclose(todo["grid"], todo["nearest"])
    avg = explain.kv_choice(tokens, IEKVD(factor=2, alpha=0.0))
    np.testing.assert_allclose(avg["grid"], avg["average"], atol=1e-6)
    np.testing.assert_allclose(avg["average"], tokens.reshape(8, 2, 8, 2).mean((1, 3)), atol=1e-6)
    ext = explain.kv_choice(tokens, IEKVD(factor=2, alpha=1.5))
    np.testing.assert_allclose(ext["grid"], ext["average"] + 1.5 * (ext["nearest"] - ext["average"]), atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        explain.kv_choice(tokens[:1, :1], ToDo(factor=2))


def test_methods_from_settings() -> None:
    settings = {"tome": {"ratio": 0.3}, "lgtm": {"ratio": 0.6}, "todo": {"factor": 2}, "iekvd": {"alpha_end": 1.2}}
    ms = explain.methods_from_settings(["baseline", "ToMe", "L-GTM", "todo", "IE-KVD", "sito"], settings)
    assert [type(m) for m in ms] == [ToMe, LGTM, ToDo, IEKVD, SiTo]
    assert ms[0].ratio == 0.3 and ms[1].ratio == 0.6 and ms[3].alpha_end == 1.2 and ms[4] == SiTo()
    with pytest.raises(ValueError, match="unknown method"):
        explain.methods_from_settings(["nope"])
    with pytest.raises(ValueError, match="ratio"):
        explain.methods_from_settings(["tome"], {"tome": {"ratio": 0.9}})
    with pytest.raises(ValueError, match="factor must be an integer"):
        explain.methods_from_settings(["todo"], {"todo": {"factor": 2.5}})
    with pytest.raises(ValueError, match="once"):
        explain.methods_from_settings(["tome", "tome"])


def test_benchmark_report(tmp_path) -> None:
    text, plots = explain.benchmark_report(tmp_path)
    assert "No benchmark results yet" in text and plots == []
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "speed.md").write_text("| method | ms |\n|---|---|\n| ToMe | 1.0 |\n")
    (tmp_path / "bench" / "speed.json").write_text(json.dumps({"command": "python -m bigain.bench", "rows": []}))
    Image.new("RGB", (4, 4)).save(tmp_path / "bench" / "speed.png")
    text, plots = explain.benchmark_report(tmp_path)
    assert "| ToMe | 1.0 |" in text and "`python -m bigain.bench`" in text
    assert plots == [(str(tmp_path / "bench" / "speed.png"), "bench/speed.png")]


def test_digit_examples_are_test_split_pngs(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BIGAIN_EXAMPLES", str(tmp_path))
    ex = explain.digit_examples()
    assert len(ex) == 10
    img = Image.open(ex[7][0])
    assert img.size == (16, 16) and img.mode == "L" and "digit7" in ex[7][0]


def test_timing_rounds_rotate_the_order() -> None:
    a, b, c = ToMe(), LGTM(), ToDo()
    order = compare._rounds([a, b, c], 2)
    assert order == [(0, a), (0, b), (0, c), (1, b), (1, c), (1, a)]
    for bad in (0, 11, 1.5):
        with pytest.raises(ValueError, match="timing rounds"):
            compare._rounds([a], bad)
