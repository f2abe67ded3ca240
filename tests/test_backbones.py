"""Backbone adapters on tiny configs of each class: SD 1/2 and SDXL U-Nets, DiT, PixArt, SD3 and Flux.

Tokens are counted where attention is called (``scaled_dot_product_attention``), so what is checked
is what reaches attention: the expected count, in exactly the targeted blocks, with joint attention's
text tokens whole."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel, PixArtTransformer2DModel, SD3Transformer2DModel

import bigain
from bigain import patch
from bigain.backbones import adapter_for
from bigain.methods import IEKVD, LGTM, Baseline, FreqKV, SiTo, ToDo, ToMe
from bigain.opcount import count_ops
from tests.conftest import tiny_unet

TXT = 5  # text tokens of the joint models
METHODS = [
    ToMe(ratio=0.5),
    LGTM(ratio=0.7),
    LGTM(ratio=0.5, scorer="variance"),
    ToDo(),
    IEKVD(alpha=0.8, alpha_end=1.2),
    FreqKV(keep="low"),
    SiTo(ratio=0.5),
]


def tiny_sd3() -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, num_layers=4, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
        pos_embed_max_size=32,
    ).eval()  # fmt: skip


def tiny_flux() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=2, num_single_layers=3, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4),
    ).eval()  # fmt: skip


def tiny_pixart() -> PixArtTransformer2DModel:
    torch.manual_seed(0)
    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=6,
        cross_attention_dim=16, sample_size=16, patch_size=2, norm_type="ada_norm_single", caption_channels=16,
    ).eval()  # fmt: skip


def _noise(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def sd3_call(net):
    x, text, pooled = _noise(2, 4, 16, 16), torch.ones(2, TXT, 16), torch.ones(2, 8)
    return lambda: net(x, encoder_hidden_states=text, pooled_projections=pooled, timestep=torch.tensor([500.0] * 2))


def flux_call(net):
    rows = torch.arange(64.0)
    img_ids = torch.stack([torch.zeros(64), rows // 8, rows % 8], 1)
    x, text, pooled = _noise(2, 64, 8), torch.ones(2, TXT, 16), torch.ones(2, 8)
    t = torch.tensor([0.5, 0.5])  # Flux pipelines pass t / 1000
    return lambda: net(x, text, pooled, t, img_ids, torch.zeros(TXT, 3))


def pixart_call(net):
    x, text = _noise(2, 4, 16, 16), torch.ones(2, TXT, 16)
    cond = {"resolution": None, "aspect_ratio": None}
    return lambda: net(x, encoder_hidden_states=text, timestep=torch.tensor([500, 500]), added_cond_kwargs=cond)


#: (builder, call, image tokens per attention, joint?, blocks compressed by default)
BACKBONES = {
    "sd3": (tiny_sd3, sd3_call, 64, True, [1, 2, 3]),
    "flux": (tiny_flux, flux_call, 64, True, [1, 2, 3, 4]),
    "pixart": (tiny_pixart, pixart_call, 64, False, [1, 2, 3, 4, 5]),
}


class AttentionSpy:
    """Records (queries, keys) of every scaled_dot_product_attention call in the block."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[int, int]] = []
        real = F.scaled_dot_product_attention

        def spy(*args, **kw):
            q, k = kw.get("query", args[0] if args else None), kw.get("key", args[1] if len(args) > 1 else None)
            self.calls.append((int(q.shape[-2]), int(k.shape[-2])))
            return real(*args, **kw)

        monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)

    def run(self, call) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        self.calls = []
        with torch.no_grad():
            out = call()
        out = out.sample if hasattr(out, "sample") else out[0]
        return out, list(self.calls)


def _expected(method, n: int) -> tuple[int, int]:
    if isinstance(method, (IEKVD, FreqKV)):
        return n, n // 4
    kept = n - int(n * method.ratio)
    return kept, kept


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_method_compresses_exactly_the_targeted_blocks(name: str, monkeypatch) -> None:
    build, make_call, n, joint, blocks = BACKBONES[name]
    net = build()
    call = make_call(net)
    spy = AttentionSpy(monkeypatch)
    base, base_calls = spy.run(call)
    self_calls = [c for c in base_calls if c == (n + TXT * joint, n + TXT * joint)]  # the compressible ones
    assert len(self_calls) == len(patch._State(net, None).targets)
    for method in METHODS:
        with bigain.compress(net, method):
            out, calls = spy.run(call)
        assert not torch.allclose(out, base, atol=1e-6), (name, method)
        changed = [i for i, (a, b) in enumerate(zip(calls, base_calls, strict=True)) if a != b]
        q, kv = _expected(method, n)
        assert {calls[i] for i in changed} == {(q + TXT * joint, kv + TXT * joint)}  # text tokens whole
        targets = [i for i, c in enumerate(base_calls) if c == (n + TXT * joint,) * 2]
        assert changed == [targets[b] for b in blocks], (name, method)
    assert not bigain.is_patched(net)
    again, _ = spy.run(call)
    assert torch.equal(again, base)  # compress() unpatched by itself: bit-identical


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_joint_attention_uncompressed_equals_the_original_processor(name: str) -> None:
    """Our joint path (projections, q/k norms, rotary, text order) at ratio 0 is the model's own attention."""
    build, make_call, *_ = BACKBONES[name]
    net = build()
    call = make_call(net)
    with torch.no_grad():
        base = call().sample
        with bigain.compress(net, ToMe(ratio=0.0)):
            ours = call().sample
    torch.testing.assert_close(ours, base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_joint_models_capture_remove_and_threads(name: str) -> None:
    build, make_call, *_ = BACKBONES[name]
    net = build()
    call = make_call(net)
    with torch.no_grad():
        base = call().sample
    for method in (Baseline(), *METHODS):
        bigain.apply(net, method)
        torch._dynamo.reset()
        with torch.no_grad():
            explained = torch._dynamo.explain(call)()
        assert explained.graph_break_count == 0, (name, method, explained.break_reasons)
        assert count_ops(call).syncs == 0
    expected = {}
    for m in METHODS:
        with bigain.compress(net, m), torch.no_grad():
            bigain.seed(net, 0)
            expected[m] = call().sample
    results: dict = {}

    def work(m) -> None:
        with bigain.compress(net, m), torch.no_grad():
            bigain.seed(net, 0)
            results[m] = call().sample

    threads = [threading.Thread(target=work, args=(m,)) for m in METHODS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(results[m], expected[m]) for m in METHODS)
    bigain.remove(net)
    with torch.no_grad():
        assert torch.equal(call().sample, base)


def test_sdxl_and_sd_defaults_differ_by_level_and_unknown_models_are_named() -> None:
    assert adapter_for(tiny_unet()).name == "unet"
    sd = bigain.compressed_blocks(tiny_unet(), ToMe())
    sdxl = bigain.compressed_blocks(tiny_unet(first_level_attention=False), ToMe())
    assert sd and all(b.startswith(("down_blocks.0", "up_blocks.1")) for b in sd)
    # a 2-level U-Net's mid block runs at its level-1 resolution too
    assert sdxl and all(b.startswith(("down_blocks.1", "up_blocks.0", "mid_block")) for b in sdxl)
    with pytest.raises(TypeError, match=r"supported are UNet2DConditionModel, .*FluxTransformer2DModel"):
        bigain.apply(torch.nn.Linear(2, 2), ToMe())
    assert adapter_for(tiny_pixart()).name == "pixart"  # recognised on purpose, not as a look-alike DiT


def test_flux_needs_its_grid_for_non_square_images() -> None:
    net = tiny_flux()
    x, text, pooled = _noise(1, 48, 8), torch.ones(1, TXT, 16), torch.ones(1, 8)
    rows = torch.arange(48.0)
    ids = torch.stack([torch.zeros(48), rows // 8, rows % 8], 1)
    with bigain.compress(net, ToMe()), torch.no_grad():
        with pytest.raises(ValueError, match="image_grid"):
            net(x, text, pooled, torch.tensor([0.5]), ids, torch.zeros(TXT, 3))
        bigain.patch.image_grid(net, 6, 8)
        with bigain.record() as rec:
            net(x, text, pooled, torch.tensor([0.5]), ids, torch.zeros(TXT, 3))
    assert {(e.h, e.w, e.n_tokens) for e in rec.events} == {(6, 8, 48)}
