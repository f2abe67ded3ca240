"""Patching diffusers models: tomesd equivalence, exact removal, token counts, FLOPs, targets, threads."""

from __future__ import annotations

import copy

import pytest
import tomesd
import torch

import bigain
from bigain.flops import count_flops
from bigain.methods import IEKVD, LGTM, Baseline, ToDo, ToMe
from tests.conftest import run_in_threads, tiny_dit, tiny_unet

ALL = [ToMe(ratio=0.5), LGTM(), LGTM(dst="laplacian-code"), ToDo(), IEKVD(), IEKVD(alpha=0.8, alpha_end=1.2)]


def run_unet(unet, inputs) -> torch.Tensor:
    x, t, enc = inputs
    with torch.no_grad():
        return unet(x, t, enc).sample


def run_dit(dit, inputs) -> torch.Tensor:
    x, t, labels = inputs
    with torch.no_grad():
        return dit(x, timestep=t, class_labels=labels).sample


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_tome_equals_tomesd(unet, unet_inputs, ratio: float) -> None:
    ref_model = copy.deepcopy(unet)
    tomesd.apply_patch(ref_model, ratio=ratio, use_rand=False)
    expected = run_unet(ref_model, unet_inputs)
    bigain.apply(unet, ToMe(ratio=ratio, use_rand=False))
    torch.testing.assert_close(run_unet(unet, unet_inputs), expected, rtol=1e-5, atol=1e-5)


def _slots_of(dst: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Destination positions (Nd,) → tomesd's random draw (h/2, w/2, 1) that picks them."""
    slots = torch.empty(h // 2, w // 2, 1, dtype=torch.long)
    for p in dst.tolist():
        y, x = divmod(p, w)
        slots[y // 2, x // 2, 0] = (y % 2) * 2 + x % 2
    return slots


def test_random_tome_equals_tomesd_given_the_same_draws(unet, unet_inputs, monkeypatch) -> None:
    """Our random destinations come from a counter-based generator (capturable), not tomesd's
    torch.Generator; fed the same draws, tomesd merges exactly as we do."""
    bigain.apply(unet, ToMe(ratio=0.5))
    bigain.seed(unet, 5)
    state = torch.get_rng_state()
    with bigain.record(maps=True) as rec:
        out = run_unet(unet, unet_inputs)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    draws = [_slots_of(e.dst, e.h, e.w) for e in rec.events]
    assert len({tuple(d.flatten().tolist()) for d in draws}) == len(draws)  # a fresh pattern per layer
    bigain.remove(unet)
    tomesd.apply_patch(unet, ratio=0.5, use_rand=True)
    monkeypatch.setattr(torch, "randint", lambda *a, **k: draws.pop(0))
    torch.testing.assert_close(run_unet(unet, unet_inputs), out, rtol=1e-5, atol=1e-5)
    assert not draws


def test_random_destinations_are_uniform_and_fresh_per_call() -> None:
    from bigain.ops.rng import draw, new_key

    key = new_key(0)
    ids = torch.arange(4096).view(1, -1)
    a, b = draw(key, ids) % 4, draw(key, ids) % 4
    counts = torch.bincount(a.flatten(), minlength=4).float() / 4096
    assert (counts - 0.25).abs().max() < 0.03 and (a != b).float().mean() > 0.7
    assert torch.equal(draw(new_key(0), ids), draw(new_key(0), ids))


def test_remove_is_bit_identical_to_never_patched(unet, unet_inputs) -> None:
    expected = run_unet(unet, unet_inputs)
    originals = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    for method in ALL:
        bigain.apply(unet, method)
        assert not torch.equal(run_unet(unet, unet_inputs), expected)
    bigain.remove(unet)
    assert not bigain.is_patched(unet)
    assert all(m.processor is originals[n] for n, m in unet.named_modules() if hasattr(m, "processor"))
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in unet.modules())
    assert torch.equal(run_unet(unet, unet_inputs), expected)


def test_baseline_on_patched_model_is_bit_identical(unet, unet_inputs, dit, dit_inputs) -> None:
    expected_u, expected_d = run_unet(unet, unet_inputs), run_dit(dit, dit_inputs)
    bigain.apply(unet, Baseline())
    bigain.apply(dit, Baseline())
    assert torch.equal(run_unet(unet, unet_inputs), expected_u) and torch.equal(run_dit(dit, dit_inputs), expected_d)


def expected_counts(method, n: int, h: int, w: int) -> tuple[int, int]:
    if isinstance(method, IEKVD):
        return n, (h // method.factor) * (w // method.factor)
    kept = n - int(n * method.ratio)
    return kept, kept


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.label())
def test_every_method_changes_output_and_cuts_tokens_unet(unet, unet_inputs, method) -> None:
    base = run_unet(unet, unet_inputs)
    with bigain.record() as rec, bigain.compress(unet, method):
        out = run_unet(unet, unet_inputs)
    assert not torch.allclose(out, base, atol=1e-6)
    names = [e.block for e in rec.events]
    # max_downsample=1: the full-resolution (16×16) blocks only, down and up
    assert names == [
        "down_blocks.0.attentions.0.transformer_blocks.0",
        "up_blocks.1.attentions.0.transformer_blocks.0",
        "up_blocks.1.attentions.1.transformer_blocks.0",
    ]
    for e in rec.events:
        assert (e.h, e.w, e.n_tokens) == (16, 16, 256)
        assert (e.n_q, e.n_kv) == expected_counts(method, 256, 16, 16)
    assert not bigain.is_patched(unet)  # compress patched and unpatched by itself


@pytest.mark.parametrize("method", ALL, ids=lambda m: m.label())
def test_every_method_changes_output_and_cuts_tokens_dit(dit, dit_inputs, method) -> None:
    base = run_dit(dit, dit_inputs)
    with bigain.record() as rec, bigain.compress(dit, method):
        out = run_dit(dit, dit_inputs)
    assert not torch.allclose(out, base, atol=1e-6)
    # the paper's blocks 1–5 (and 7–11) of the 6 that exist
    assert [e.block for e in rec.events] == [f"transformer_blocks.{i}" for i in range(1, 6)]
    for e in rec.events:
        assert (e.h, e.w, e.n_tokens) == (8, 8, 64)
        assert (e.n_q, e.n_kv) == expected_counts(method, 64, 8, 8)


def test_dit_block_selection(dit_inputs) -> None:
    dit = tiny_dit(num_layers=12)
    with bigain.record() as rec, bigain.compress(dit, ToMe(ratio=0.5)):
        run_dit(dit, dit_inputs)
    assert [int(e.block.rsplit(".", 1)[1]) for e in rec.events] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    with bigain.record() as rec, bigain.compress(dit, ToMe(ratio=0.5, blocks=(0, 11))):
        run_dit(dit, dit_inputs)
    assert [e.block for e in rec.events] == ["transformer_blocks.0", "transformer_blocks.11"]
    bigain.apply(dit, ToMe(), blocks=(2,))  # a model card's own default
    assert bigain.compressed_blocks(dit, ToMe()) == ["transformer_blocks.2"]
    with pytest.raises(ValueError, match="do not exist"):
        bigain.apply(dit, ToMe(blocks=(12,)))


def _width(model, block: str) -> int:
    return model.get_submodule(block).attn1.to_q.in_features


def denoiser_flops(model, inputs, method, run) -> int:
    with bigain.compress(model, method):
        return count_flops(lambda: run(model, inputs))


def test_flops_fall_with_ratio_and_factor(unet, unet_inputs, dit, dit_inputs) -> None:
    for model, inputs, run in ((unet, unet_inputs, run_unet), (dit, dit_inputs, run_dit)):
        base = denoiser_flops(model, inputs, Baseline(), run)
        tome = [denoiser_flops(model, inputs, ToMe(ratio=r), run) for r in (0.3, 0.5, 0.7)]
        lgtm = denoiser_flops(model, inputs, LGTM(ratio=0.7), run)
        kv = [denoiser_flops(model, inputs, IEKVD(factor=f), run) for f in (2, 4)]
        assert base > tome[0] > tome[1] > tome[2]
        # L-GTM = ToMe's matching + one depthwise 3×3 Laplacian per layer (2·9 FLOPs per element)
        with bigain.record() as rec, bigain.compress(model, LGTM(ratio=0.7)):
            run(model, inputs)
        conv = sum(2 * 9 * e.n_tokens * inputs[0].shape[0] * _width(model, e.block) for e in rec.events)
        assert lgtm - tome[2] == conv
        assert base > kv[0] > kv[1]


def test_todo_is_iekvd_with_alpha_one(unet, unet_inputs) -> None:
    with bigain.compress(unet, ToDo()):
        a = run_unet(unet, unet_inputs)
    with bigain.compress(unet, IEKVD(alpha=1.0)):
        b = run_unet(unet, unet_inputs)
    assert torch.equal(a, b)


def test_kv_methods_skip_t_zero(unet, unet_inputs) -> None:
    x, _, enc = unet_inputs
    base = run_unet(unet, (x, torch.tensor(0), enc))
    with bigain.compress(unet, IEKVD(alpha=0.8, alpha_end=1.2)):
        assert torch.equal(run_unet(unet, (x, torch.tensor(0), enc)), base)
        assert not torch.equal(run_unet(unet, (x, torch.tensor([999, 999]), enc)), run_unet(unet, unet_inputs))


def test_lgtm_scores_the_block_input_in_sd(unet, unet_inputs) -> None:
    seen = {}
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]

    def grab(module, args, kwargs) -> None:
        seen.setdefault("x", args[0] if args else kwargs["hidden_states"])

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    with bigain.record(maps=True) as rec, bigain.compress(unet, LGTM()):
        run_unet(unet, unet_inputs)
    handle.remove()
    first = rec.events[0]
    torch.testing.assert_close(first.scores, bigain.ops.laplacian_score(seen["x"], 16, 16)[0])
    assert first.groups is not None and first.dst is not None and len(first.dst) == 64


def test_sdxl_shaped_unet_compresses_its_highest_attention_level_by_default(unet_inputs) -> None:
    """SDXL has no attention at full resolution: the default is its 2× downsampled level."""
    unet = tiny_unet(first_level_attention=False)
    with pytest.raises(ValueError, match="compress nothing"):
        bigain.apply(unet, ToMe(max_downsample=1))
    assert not bigain.is_patched(unet)
    for method in (ToMe(), ToMe(max_downsample=2)):
        bigain.apply(unet, method)
        with bigain.record() as rec:
            run_unet(unet, unet_inputs)
        assert {(e.h, e.w, e.n_q) for e in rec.events} == {(8, 8, 32)}


def test_unknown_layout_is_an_error() -> None:
    with pytest.raises(TypeError, match="don't know how to patch"):
        bigain.apply(torch.nn.Linear(3, 3), ToMe())
    with pytest.raises(TypeError, match="expected a diffusers model"):
        bigain.apply(object(), ToMe())


def test_pipeline_objects_and_method_switching(unet, unet_inputs) -> None:
    class Pipe:
        def __init__(self, unet) -> None:
            self.unet = unet

    pipe = Pipe(unet)
    bigain.apply(pipe, ToMe())
    processors = [m.processor for m in unet.modules() if hasattr(m, "processor")]
    bigain.apply(pipe, IEKVD())  # switching re-uses the installed processors
    assert [m.processor for m in unet.modules() if hasattr(m, "processor")] == processors
    assert bigain.patch.active_method(pipe) == IEKVD()
    bigain.remove(pipe)


def test_compress_contexts_in_concurrent_threads_each_use_their_own_method(unet, unet_inputs) -> None:
    """The patch level: one patched U-Net shared by threads, each inside its own ``bigain.compress``
    context; the active method is per thread, so every forward pass equals the same method run alone."""
    methods = [ToMe(ratio=0.7, use_rand=False), IEKVD(), Baseline(), LGTM()]
    bigain.apply(unet, Baseline())
    expected = {}
    for m in methods:
        with bigain.compress(unet, m):
            expected[m] = run_unet(unet, unet_inputs)

    def work(m):
        with bigain.compress(unet, m):
            return run_unet(unet, unet_inputs)

    results = run_in_threads(work, methods, repeats=3)  # re-raises any thread's error
    for m in methods:
        assert len(results[m]) == 3
        for out in results[m]:
            torch.testing.assert_close(out, expected[m], rtol=0, atol=1e-6)


def test_seed_makes_random_tome_deterministic(unet, unet_inputs) -> None:
    bigain.apply(unet, ToMe(ratio=0.7))
    outs = []
    for _ in range(2):
        bigain.seed(unet, 123)
        outs.append(run_unet(unet, unet_inputs))
    assert torch.equal(outs[0], outs[1])


def test_copying_a_patched_model_says_what_to_do(unet) -> None:
    bigain.apply(unet, ToMe())
    with pytest.raises(TypeError, match="remove"):
        copy.deepcopy(unet)
    bigain.remove(unet)
    copy.deepcopy(unet)  # fine once unpatched
