"""The benchmark harness: published configs, variants, interleaving, Amdahl clock, CLI outputs.

No timing assertions: only structure, bookkeeping and that every output is written."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

import bigain
from bigain import bench
from bigain.methods import LGTM, ToMe


def meta_model(name: str) -> torch.nn.Module:
    spec = bench.model_spec(name)
    cls = UNet2DConditionModel if spec.family == "unet" else DiTTransformer2DModel
    with torch.device("meta"):
        return bench._construct(cls, spec.config)


def test_sd2_config_is_the_published_unet() -> None:
    unet = meta_model("sd2-base")
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # stabilityai/stable-diffusion-2-base
    heads = [b.attn1.heads for b in unet.modules() if type(b).__name__ == "BasicTransformerBlock"]
    assert heads[:2] == [5, 5] and max(heads) == 20 and len(heads) == 16


@pytest.mark.parametrize(("name", "size"), [("dit-xl-2-256", 32), ("dit-xl-2-512", 64)])
def test_dit_config_is_dit_xl_2(name: str, size: int) -> None:
    dit = meta_model(name)
    assert len(dit.transformer_blocks) == 28 and dit.config.sample_size == size
    attn = dit.transformer_blocks[0].attn1
    assert attn.heads == 16 and attn.inner_dim == 16 * 72 and dit.config.patch_size == 2
    assert dit.config.out_channels == 8 and dit.config.num_embeds_ada_norm == 1000


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown benchmark model"):
        bench.model_spec("sd9")
    with pytest.raises(ValueError, match="--dtype"):
        bench._parse_dtype("fp8")
    spec = bench.model_spec("dit-xl-2-256")
    with pytest.raises(ValueError, match="fixed resolution"):
        bench.make_inputs(spec, meta_model("dit-xl-2-256"), 512, 1, torch.device("cpu"), torch.float32, 0)
    with pytest.raises(ValueError, match="square"):
        bench._ops_cases(1, 50, 8, 0.5, torch.device("cpu"), torch.float32, 0)
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        bench.main(["speed", "--model", "digits-dit", "--random-weights", "--dtype", "fp16", "--device", "cpu"])


def test_inputs_have_the_model_shapes() -> None:
    spec = bench.model_spec("sd2-base")
    unet = meta_model("sd2-base")
    x = bench.make_inputs(spec, unet, 768, 2, torch.device("cpu"), torch.float32, 0)
    assert (
        x["sample"].shape == (2, 4, 96, 96) and x["enc"].shape == (2, 77, 1024) and x["timestep"].tolist() == [500, 500]
    )


def test_variants_paths_and_tomesd_reference() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    v = bench.build_variants(["tome:ratio=0.7", "lgtm:ratio=0.7", "todo", "iekvd"], "unet", cpu, "both", True)
    assert v[0].label == "Baseline" and {x.path for x in v} == {"torch", "tomesd"}
    assert [x.ratio for x in v if x.method is None] == [0.7]
    g = bench.build_variants(
        ["baseline", "tome:ratio=0.5", "todo", "iekvd", "tomesd:ratio=0.3"], "unet", cuda, "both", True
    )
    paths = [(x.name, x.path) for x in g]
    assert ("tome", "triton") in paths and ("iekvd", "triton") in paths and ("todo", "triton") not in paths
    assert ("baseline", "triton") not in paths and [x.ratio for x in g if x.method is None] == [0.3, 0.5]
    d = bench.build_variants(["lgtm:ratio=0.7"], "dit", cpu, "both", True)
    assert all(x.method is not None for x in d)  # tomesd does not patch DiT's paper blocks


def test_interleaving_rotates_and_skips_warmup() -> None:
    vs = [bench.Variant(k, k, bigain.Baseline(), "torch") for k in "abc"]
    seen: list[str] = []
    times = bench.time_interleaved(vs, lambda v: seen.append(v.key), torch.device("cpu"), rounds=3, warmup=1)
    assert seen == list("abc" + "bca" + "cab" + "abc")
    assert all(len(t) == 3 for t in times.values())


def test_summary_pairs_rounds() -> None:
    s = bench._summary([1.0, 2.0, 1.0], [2.0, 2.0, 3.0])
    assert s["speedup"] == 2.0 and s["speedup_min"] == 2.0 and s["min_s"] == 1.0 and s["median_s"] == 1.0


def test_attention_clock_measures_the_compressed_layers(unet, unet_inputs) -> None:
    x, t, enc = unet_inputs
    bigain.apply(unet, bigain.Baseline())
    blocks = bigain.compressed_blocks(unet, LGTM())
    clock = bench.AttnClock(unet, blocks, torch.device("cpu"))
    for _ in range(2):
        clock.run(lambda: bench.denoiser_call(unet, {"sample": x, "timestep": t, "enc": enc}))
    prof = clock.summary(skip=0)
    assert 0 < prof["share"] < 1 and prof["ceiling"] == pytest.approx(1 / (1 - prof["share"]))
    assert prof["blocks"] == blocks and prof["rounds"] == 2
    assert not any(m._forward_hooks or m._forward_pre_hooks for b in blocks for m in [unet.get_submodule(b).attn1])


def test_same_processor_for_every_attention(unet) -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor

    bench.set_attention(unet, "vanilla")
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
    found = bench.eval_rows(tmp_path / "eval")
    assert found == [{"model": "d", "method": "L-GTM r=0.7", "acc": 70.0}, *rows]
    setting = {"res": 16, "batch": 2, "results": [{"label": "ToMe r=0.5 [torch]", "speedup": 1.2}]}
    speed = {"kind": "speed", "model": "m", "device_name": "cpu", "settings": [setting]}
    assert bench.plot_accuracy([speed], found, tmp_path / "acc.png") == tmp_path / "acc.png"
    assert bench.plot_accuracy([{**speed, "model": "other"}], found, tmp_path / "none.png") is None  # models differ
    assert bench.plot_accuracy([speed], [], tmp_path / "none.png") is None


def test_tomesd_variant_leaves_the_model_as_it_was(unet, unet_inputs) -> None:
    pytest.importorskip("tomesd")
    x, t, enc = unet_inputs
    inputs = {"sample": x, "timestep": t, "enc": enc}
    bigain.apply(unet, bigain.Baseline())
    before = bench.denoiser_call(unet, inputs)
    (v,) = [
        v
        for v in bench.build_variants(["tome:ratio=0.5"], "unet", torch.device("cpu"), "off", True)
        if v.method is None
    ]
    with v.active(unet):
        merged = bench.denoiser_call(unet, inputs)
    assert not torch.equal(merged, before) and bigain.is_patched(unet)
    assert torch.equal(bench.denoiser_call(unet, inputs), before)
    bigain.apply(unet, ToMe(ratio=0.5))  # and our own patch still works afterwards
    assert not torch.equal(bench.denoiser_call(unet, inputs), before)
