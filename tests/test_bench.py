"""The benchmark harness: published configs, variants, interleaving, Amdahl clock, CLI outputs.

No timing assertions: only structure, bookkeeping and that every output is written."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

import bigain
from bigain import bench, timing, zoo
from bigain.bench import common, models, ops, report, speed, variants
from bigain.methods import LGTM


@pytest.fixture(autouse=True)
def _no_git_process(monkeypatch) -> None:
    """Results record the commit read from .git; tests never start a git process."""
    monkeypatch.setenv("BIGAIN_BENCH_GIT", "0")


def meta_model(name: str, width: int = 1) -> torch.nn.Module:
    return zoo.build(models.model_arch(name), device="meta", seed=None, width=width)[0]


def test_sd2_config_is_the_published_unet() -> None:
    unet = meta_model("sd2-base")
    assert isinstance(unet, UNet2DConditionModel)
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # stabilityai/stable-diffusion-2-base
    heads = [b.attn1.heads for b in unet.modules() if type(b).__name__ == "BasicTransformerBlock"]
    assert heads[:2] == [5, 5] and max(heads) == 20 and len(heads) == 16


@pytest.mark.parametrize(("name", "size"), [("dit-xl-2-256", 32), ("dit-xl-2-512", 64)])
def test_dit_config_is_dit_xl_2(name: str, size: int) -> None:
    dit = meta_model(name)
    assert isinstance(dit, DiTTransformer2DModel)
    assert len(dit.transformer_blocks) == 28 and dit.config.sample_size == size
    attn = dit.transformer_blocks[0].attn1
    assert attn.heads == 16 and attn.inner_dim == 16 * 72 and dit.config.patch_size == 2
    assert dit.config.out_channels == 8 and dit.config.num_embeds_ada_norm == 1000


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown benchmark model"):
        models.model_arch("sd9")
    with pytest.raises(ValueError, match="--dtype"):
        common.parse_dtype("fp8")
    spec = models.model_arch("dit-xl-2-256")
    with pytest.raises(ValueError, match="fixed resolution"):
        models.make_inputs(spec, meta_model("dit-xl-2-256"), 512, 1, torch.device("cpu"), torch.float32, 0)
    with pytest.raises(ValueError, match="square"):
        ops.ops_cases(1, 50, 8, 0.5, torch.device("cpu"), torch.float32, 0)
    with pytest.raises(ValueError, match="--layers"):
        models.with_layers(models.model_arch("sd2-base"), 1)
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        bench.main(["speed", "--model", "digits-dit", "--random-weights", "--dtype", "fp16", "--device", "cpu"])


def test_inputs_have_the_model_shapes() -> None:
    spec = models.model_arch("sd2-base")
    unet = meta_model("sd2-base")
    x = models.make_inputs(spec, unet, 768, 2, torch.device("cpu"), torch.float32, 0)
    enc = x["cond"]["encoder_hidden_states"]
    assert x["sample"].shape == (2, 4, 96, 96) and enc.shape == (2, 77, 1024) and x["timestep"].tolist() == [500, 500]


def test_variants_paths_and_tomesd_reference() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    v = variants.build_variants(["tome:ratio=0.7", "lgtm:ratio=0.7", "todo", "iekvd"], cpu, "both", True)
    assert v[0].label == "Baseline" and {x.path for x in v} == {"torch", "tomesd"}
    assert [x.ratio for x in v if x.method is None] == [0.7]
    g = variants.build_variants(["baseline", "tome:ratio=0.5", "todo", "iekvd", "tomesd:ratio=0.3"], cuda, "both", True)
    paths = [(x.name, x.path) for x in g]
    assert ("tome", "triton") in paths and ("iekvd", "triton") in paths and ("todo", "triton") not in paths
    assert ("baseline", "triton") not in paths and [x.ratio for x in g if x.method is None] == [0.3, 0.5]
    dit = meta_model("dit-xl-2-256")
    assert not models.tomesd_supported(dit)  # tomesd does not patch DiT's paper blocks
    d = variants.build_variants(["lgtm:ratio=0.7"], cpu, "both", models.tomesd_supported(dit))
    assert all(x.method is not None for x in d)
    assert models.tomesd_level(meta_model("sd2-base")) == 1 and models.tomesd_level(meta_model("sdxl-base")) == 2


def test_interleaving_rotates_and_skips_warmup() -> None:
    vs = [variants.Variant(k, k, bigain.Baseline(), "torch") for k in "abc"]
    seen: list[str] = []
    times = timing.time_interleaved(vs, lambda v: seen.append(v.key), torch.device("cpu"), rounds=3, warmup=1)
    assert seen == list("abc" + "bca" + "cab" + "abc")
    assert all(len(t) == 3 for t in times.values())


def test_summary_pairs_rounds() -> None:
    s = timing.paired_summary([1.0, 2.0, 1.0], [2.0, 2.0, 3.0])
    assert s["speedup"] == 2.0 and s["speedup_min"] == 2.0 and s["min_s"] == 1.0 and s["median_s"] == 1.0


def test_attention_clock_measures_the_compressed_layers(unet, unet_inputs) -> None:
    x, t, enc = unet_inputs
    bigain.apply(unet, bigain.Baseline())
    blocks = bigain.compressed_blocks(unet, LGTM())
    clock = models.attn_clock(unet, blocks, torch.device("cpu"))
    for _ in range(2):
        clock.run(
            lambda: models.denoiser_call(unet, {"sample": x, "timestep": t, "cond": {"encoder_hidden_states": enc}})
        )
    prof = clock.summary(skip=0)
    assert 0 < prof["share"] < 1 and prof["ceiling"] == pytest.approx(1 / (1 - prof["share"]))
    assert prof["blocks"] == blocks and prof["rounds"] == 2
    assert not any(m._forward_hooks or m._forward_pre_hooks for b in blocks for m in [unet.get_submodule(b).attn1])


def test_same_processor_for_every_attention(unet) -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor

    models.set_attention(unet, "vanilla")
    assert all(isinstance(m.processor, AttnProcessor) for m in unet.modules() if isinstance(m, Attention))


def test_speed_cli_writes_json_markdown_and_plot(tmp_path) -> None:
    out = tmp_path / "speed-digits-unet"
    args = ["speed", "--model", "digits-unet", "--random-weights", "--rounds", "2", "--warmup", "1", "--threads", "1"]
    assert bench.main([*args, "--methods", "tome:ratio=0.5", "lgtm:ratio=0.5", "iekvd", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    (setting,) = res["settings"]
    labels = [r["label"] for r in setting["results"]]
    assert labels[0] == "Baseline" and "tomesd r=0.5" in labels and len(labels) == 5
    base = setting["results"][0]
    assert base["speedup"] == 1.0 and base["flops_ratio"] == 1.0 and len(base["times_s"]) == 2
    lgtm = next(r for r in setting["results"] if r["method"] == "lgtm")
    assert lgtm["flops_ratio"] < 1 and lgtm["ceiling"] > 1 and lgtm["peak_bytes"] is None  # no CPU peak counter
    (prof,) = setting["profiles"].values()
    assert prof["rounds"] == 2 and prof["blocks"]
    assert out.with_suffix(".md").read_text().count("| L-GTM r=0.5 |") == 1 and out.with_suffix(".png").exists()


def test_layer_job_times_one_compressed_layer(tmp_path) -> None:
    out = tmp_path / "layer"
    args = ["speed", "--model", "digits-unet", "--random-weights", "--job", "layer", "--rounds", "2", "--threads", "1"]
    assert bench.main([*args, "--methods", "lgtm:ratio=0.5", "--no-flops", "--out", str(out)]) == 0
    (setting,) = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert setting["layer"].endswith("transformer_blocks.0") and setting["tokens"] == 64  # 8×8 latent
    assert [r["label"] for r in setting["results"]] == ["Baseline", "L-GTM r=0.5", "tomesd r=0.5"]
    assert "one compressed layer alone" in out.with_suffix(".md").read_text()


def test_ops_cli_and_report(tmp_path) -> None:
    out = tmp_path / "ops"
    args = ["ops", "--tokens", "64", "--channels", "16", "--rounds", "2", "--warmup", "1", "--threads", "1"]
    assert bench.main([*args, "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    ops = {r["op"]: r for r in res["results"]}
    assert ops["attention (SDPA)"]["of_attention"] == 1.0 and "tomesd build + merge + unmerge" in ops
    assert res["checks"]["tome_vs_tomesd_max_abs_diff"] < 1e-5  # same destinations, same merge
    md = tmp_path / "B.md"
    assert bench.main(["report", str(tmp_path), "--md", str(md), "--eval", str(tmp_path / "none")]) == 0
    text = md.read_text()
    assert "# Benchmarks" in text and "Ours / tomesd" in text and "No accuracy-vs-speed-up plot" in text


def test_eval_rows_feed_the_accuracy_plot(tmp_path) -> None:
    (tmp_path / "eval").mkdir()
    rows = [{"model": "m", "method": "ToMe r=0.5", "acc": 80.0}, {"model": "m", "method": "Baseline", "acc": 90.0}]
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"rows": rows}))
    digits = {"model": "d", "classification": {"methods": {"lgtm-0.7": {"method": "L-GTM r=0.7", "acc": 70.0}}}}
    (tmp_path / "eval" / "d.json").write_text(json.dumps(digits))
    found = report.eval_rows(tmp_path / "eval")
    assert found == [{"model": "d", "method": "L-GTM r=0.7", "acc": 70.0}, *rows]
    setting = {"res": 16, "batch": 2, "results": [{"label": "ToMe r=0.5 [torch]", "speedup": 1.2}]}
    speed = {"kind": "speed", "model": "m", "device_name": "cpu", "settings": [setting]}
    assert report.plot_accuracy([speed], found, tmp_path / "acc.png") == tmp_path / "acc.png"
    assert report.plot_accuracy([{**speed, "model": "other"}], found, tmp_path / "none.png") is None  # models differ
    assert report.plot_accuracy([speed], [], tmp_path / "none.png") is None


def test_tomesd_runs_on_its_own_copy_patched_once(unet, unet_inputs) -> None:
    """tomesd gets a copy of the plain model, patched once; bigain's model is never touched by it."""
    pytest.importorskip("tomesd")
    x, t, enc = unet_inputs
    inputs = {"sample": x, "timestep": t, "cond": {"encoder_hidden_states": enc}}
    before = models.denoiser_call(unet, inputs)
    vs = variants.build_variants(["tome:ratio=0.5"], torch.device("cpu"), "off", models.tomesd_supported(unet))
    dn = variants.Denoisers(unet, vs)
    (ts,) = [v for v in vs if v.method is None]
    twin = dn.model(ts)
    assert twin is not unet and bigain.is_patched(unet) and not bigain.is_patched(twin)
    assert hasattr(twin, "_tome_info") and not hasattr(unet, "_tome_info")
    for v in vs:  # select: untimed, and switching never re-patches anything
        dn.select(v, 0)
    assert not torch.equal(models.denoiser_call(twin, inputs), before)
    dn.select(vs[0], 0)
    assert torch.equal(models.denoiser_call(unet, inputs), before)  # the patched baseline is the plain model
    with pytest.raises(RuntimeError, match="before bigain patches"):
        variants.tomesd_copy(unet, ts)


def test_setup_runs_outside_the_timed_region() -> None:
    vs = [variants.Variant(k, k, bigain.Baseline(), "torch") for k in "ab"]
    events: list[str] = []
    timing.time_interleaved(
        vs, lambda v: events.append("run " + v.key), torch.device("cpu"), 1, 0, lambda v: events.append("set " + v.key)
    )
    assert events == ["set a", "run a", "set b", "run b"]


def test_regimes_and_narrow_configs() -> None:
    assert speed.parse_regimes(["512x2", "1024X1"]) == [(512, 2), (1024, 1)]
    with pytest.raises(ValueError, match="RESxBATCH"):
        speed.parse_regimes(["512"])
    sd2 = models.narrow(models.model_arch("sd2-base"), 8)
    assert sd2.config["block_out_channels"] == [40, 80, 160, 160] and sd2.config["cross_attention_dim"] == 128
    assert sd2.config["norm_num_groups"] == 8 and sd2.config["attention_head_dim"] == [5, 10, 20, 20]
    assert models.narrow(models.model_arch("dit-xl-2-512"), 8).config["attention_head_dim"] == 9
    with pytest.raises(ValueError, match="width-scale"):
        models.narrow(models.model_arch("sd2-base"), 3)


def test_compile_variants_run_once_on_the_torch_path() -> None:
    v = variants.build_variants(["lgtm:ratio=0.7", "todo"], torch.device("cuda"), "both", False)
    assert [(x.name, x.path) for x in v] == [
        ("baseline", "torch"),
        ("lgtm", "torch"),
        ("lgtm", "triton"),
        ("todo", "torch"),
    ]
    c = variants.mode_variants(v, "compile")
    assert [(x.name, x.path) for x in c] == [("baseline", "torch"), ("lgtm", "torch"), ("todo", "torch")]
    assert variants.mode_variants(v, "cudagraph") == v


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("sd2-base", ["--width-scale", "16", "--res", "64"]),
        ("dit-xl-2-256", ["--width-scale", "8"]),
        ("digits-dit", []),
    ],
)
def test_count_cli_reports_ops_per_layer_against_the_budgets(tmp_path, model: str, extra: list[str]) -> None:
    out = tmp_path / f"count-{model}"
    assert bench.main(["count", "--model", model, *extra, "--threads", "1", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["kind"] == "count" and res["all_met"] and res["plain"]["syncs"] == 0
    rows = {(r["spec"], r["call"]): r for r in res["rows"]}
    assert rows[("baseline", "matching")]["aten"] == 0 and rows[("baseline", "matching")]["kernels"] == 0
    tome, lgtm = rows[("tome:ratio=0.5", "matching")], rows[("lgtm:ratio=0.7", "matching")]
    assert tome["aten"] <= 42 and tome["kernels"] <= 24 and lgtm["aten"] <= 48 and lgtm["kernels"] <= 28
    assert rows[("todo", "matching")]["aten"] <= 5 and rows[("iekvd", "matching")]["aten"] <= 10
    assert rows[("iekvd:alpha=0.8;alpha_end=1.2", "matching")]["aten"] <= 12
    for spec in ("tome:ratio=0.5;reuse=steps", "lgtm:ratio=0.7;reuse=steps"):
        reuse = rows[(spec, "reuse")]
        assert reuse["aten"] <= 12 and reuse["kernels"] <= 6 and reuse["aten"] < rows[(spec, "matching")]["aten"]
    assert all(r["syncs"] == 0 and r["h2d"] == 0 for r in res["rows"])
    layers = {"sd2-base": 5, "dit-xl-2-256": 10, "digits-dit": 3}[model]
    assert tome["layers"] == layers
    tomesd = [r for r in res["rows"] if r["method"] == "tomesd"]
    if model == "sd2-base":  # tomesd patches U-Nets only, and is counted on its own copy
        assert [r["spec"] for r in tomesd] == ["tomesd:ratio=0.5", "tomesd:ratio=0.7"] and tomesd[0]["met"] is None
        assert tomesd[0]["aten"] > lgtm["aten"]
    else:
        assert tomesd == []
    md = out.with_suffix(".md").read_text()
    assert "| L-GTM r=0.7 cached/3 steps | reuse |" in md and "All budgets met: **yes**" in md
    report = tmp_path / "B.md"
    assert bench.main(["report", str(tmp_path), "--md", str(report), "--eval", str(tmp_path / "none")]) == 0
    assert "Ops added per compressed layer (ATen / kernel ops" in report.read_text()


def test_a_mode_that_cannot_run_is_recorded_not_raised(tmp_path, monkeypatch) -> None:
    """cudagraph on a CPU: the setting says why; compile: tomesd (which cannot be compiled whole)
    gets a row with the reason while the baseline is measured against the compiled baseline."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # trace only: fast
    out = tmp_path / "modes"
    args = ["speed", "--model", "digits-unet", "--random-weights", "--rounds", "1", "--warmup", "0", "--threads", "1"]
    args += ["--mode", "cudagraph", "compile", "--methods", "baseline", "tomesd:ratio=0.5", "--no-flops"]
    assert bench.main([*args, "--no-profile", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    graphed, compiled = res["settings"]
    assert graphed["mode"] == "cudagraph" and "needs a CUDA device" in graphed["error"] and graphed["results"] == []
    rows = {r["method"]: r for r in compiled["results"]}
    assert (
        compiled["mode"] == "compile" and rows["baseline"]["speedup"] == 1.0 and rows["baseline"]["mode"] == "compile"
    )
    assert rows["baseline"]["max_abs_diff_vs_eager"] == 0.0 and rows["baseline"]["host_bound"] == 1.0
    assert rows["tomesd"]["speedup"] is None and rows["tomesd"]["error"]
    md = out.with_suffix(".md").read_text()
    assert "not run: the 'cudagraph' mode needs a CUDA device" in md and "tomesd r=0.5: not measured in compile" in md
    report = tmp_path / "B.md"
    assert bench.main(["report", str(tmp_path), "--md", str(report), "--eval", str(tmp_path / "none")]) == 0
    assert "| compile |" in report.read_text() and "fails (see table)" in report.read_text()


# ---- the new backbones: SDXL, SD3, Flux (narrow, on the CPU) -------------------------------------------

NEW = {  # model → (speed/count options: narrow, few layers, small latent; compressed layers; tokens per layer)
    "sdxl-base": (["--width-scale", "16", "--res", "128"], 10, 64),  # level 2 (8×8): down 2×2 + up 3×2 layers
    "sd3-medium": (["--width-scale", "8", "--layers", "2", "--res", "64"], 2, 16),
    "flux-schnell": (["--width-scale", "4", "--layers", "1", "--res", "64"], 2, 16),
}


def test_new_models_build_narrow_and_shallow() -> None:
    xl = meta_model("sdxl-base", width=16)
    assert list(xl.config.block_out_channels) == [20, 40, 80] and xl.config.cross_attention_dim == 128
    assert len(xl.down_blocks[2].attentions[0].transformer_blocks) == 10  # depth kept
    sd3 = zoo.build(models.with_layers(models.model_arch("sd3-medium"), 1), device="meta", seed=None, width=8)[0]
    assert len(sd3.transformer_blocks) == 1 and sd3.transformer_blocks[0].attn.heads == 24
    assert sd3.config.attention_head_dim == 8 and sd3.config.joint_attention_dim == 512
    flux = zoo.build(models.with_layers(models.model_arch("flux-schnell"), 1), device="meta", seed=None)[0]
    assert len(flux.transformer_blocks) == 1 and len(flux.single_transformer_blocks) == 1
    assert flux.config.attention_head_dim == 128 and models.all_blocks(flux) == (0, 1)  # full width
    assert not models.tomesd_supported(sd3) and not models.tomesd_supported(flux)


@pytest.mark.parametrize("model", list(NEW))
def test_count_runs_on_the_new_backbones(tmp_path, model: str) -> None:
    opts, layers, _ = NEW[model]
    out = tmp_path / f"count-{model}"
    methods = ["tome:ratio=0.5", "lgtm:ratio=0.7", "todo", "iekvd", "lgtm:ratio=0.7;reuse=steps"]
    rc = bench.main(["count", "--model", model, *opts, "--methods", *methods, "--threads", "1", "--out", str(out)])
    res = json.loads(out.with_suffix(".json").read_text())
    assert rc == (0 if res["all_met"] else 1) and res["kind"] == "count" and res["plain"]["syncs"] == 0
    rows = {(r["spec"], r["call"]): r for r in res["rows"]}
    base = rows[("baseline", "matching")]
    assert base["aten"] == 0 and base["kernels"] == 0  # Flux's t / 1000 is rescaled only where a method reads it
    assert all(r["syncs"] == 0 and r["h2d"] == 0 for r in res["rows"])
    assert rows[("tome:ratio=0.5", "matching")]["layers"] == layers and rows[("tome:ratio=0.5", "matching")]["aten"] > 0
    reuse = rows[("lgtm:ratio=0.7;reuse=steps", "reuse")]
    assert reuse["aten"] < rows[("lgtm:ratio=0.7;reuse=steps", "matching")]["aten"]
    assert res["provenance"]["command"].startswith("python -m bigain.bench count")
    tomesd = [r for r in res["rows"] if r["method"] == "tomesd"]
    if model == "sdxl-base" and models.tomesd_available():  # at max_downsample 2: SDXL's finest attention level
        assert [r["spec"] for r in tomesd] == ["tomesd:ratio=0.5", "tomesd:ratio=0.7"] and tomesd[0]["aten"] > 0
    elif model != "sdxl-base":
        assert tomesd == []


@pytest.mark.parametrize("model", list(NEW))
def test_tiny_speed_runs_every_method_on_the_new_backbones(tmp_path, model: str) -> None:
    opts, layers, tokens = NEW[model]
    out = tmp_path / f"speed-{model}"
    args = ["speed", "--model", model, "--random-weights", *opts, "--batch", "1", "--rounds", "1", "--warmup", "0"]
    args += ["--no-flops", "--no-count", "--threads", "1", "--out", str(out)]
    assert bench.main(args) == 0
    (setting,) = json.loads(out.with_suffix(".json").read_text())["settings"]
    got = {r["method"] for r in setting["results"] if r["speedup"] is not None}
    assert {"baseline", "tome", "lgtm", "todo", "iekvd"} <= got and not [
        r for r in setting["results"] if r.get("error")
    ]
    assert setting["tokens"] == tokens
    (prof,) = setting["profiles"].values()
    assert len(prof["blocks"]) == layers and 0 < prof["share"] < 1


@pytest.mark.parametrize("model", ["sd3-medium", "flux-schnell"])
def test_layer_job_on_one_joint_block(tmp_path, model: str) -> None:
    out = tmp_path / f"layer-{model}"
    args = ["speed", "--model", model, "--random-weights", "--width-scale", "8" if model == "sd3-medium" else "4"]
    args += ["--layers", "1", "--res", "64", "--batch", "1", "--job", "layer", "--rounds", "1", "--warmup", "0"]
    args += ["--layer-index", "0", "1"] if model == "flux-schnell" else []
    assert bench.main([*args, "--no-flops", "--threads", "1", "--out", str(out)]) == 0
    settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    names = [s["layer"] for s in settings]
    assert names == (
        ["transformer_blocks.0", "single_transformer_blocks.0"] if model == "flux-schnell" else ["transformer_blocks.0"]
    )
    for s in settings:
        assert s["tokens"] == 16 and [r["method"] for r in s["results"]] == [
            "baseline",
            "tome",
            "lgtm",
            "todo",
            "iekvd",
        ]
    assert "one compressed layer alone" in out.with_suffix(".md").read_text()
