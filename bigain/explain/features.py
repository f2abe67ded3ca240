"""The paper's Figure-6 experiment on the model's own tokens, plus Table 12's high/low-frequency KV ablation.

One clean image of a class is noised to timestep t (default 200 of 1000) and the denoiser runs once per
method. At one compressed layer (default: the first one the backbone compresses, which for the U-Nets is
on the highest-resolution level and for the DiTs on the only token grid there is) this captures the hidden
states entering the self-attention (an h×w grid of C-channel tokens) and the attention's output, and
measures how far each method's output is from the uncompressed one:

* overall, on **edge** tokens (the quarter with the most Laplacian energy of the hidden states, ``N // 4``
  tokens) and on **smooth** tokens (the half with the least, ``N // 2``; the quarter in between is neither);
* and the relative error of the final prediction (ε for the digits models).

Methods: no compression, ToMe and L-GTM at ``ratio``, ToDo, IE-KVD (α), Freq-KV keeping each cell's
highest- and lowest-frequency token (Table 12). Every method runs where it runs by default (all its
default targets), through :func:`bigain.compress`; the layer's error compares its output with the
*uncompressed* attention applied to the very input that method's run gave it (for the first compressed
layer that input is the baseline's, bit for bit: nothing before it is compressed).

The energy is :func:`bigain.ops.laplacian.laplacian_score` of the captured hidden states: zero padded, as
L-GTM's gate is, so border tokens read high. For U-Nets L-GTM itself ranks the *block input* (the pre-norm
residual stream, as in the paper's code), so its destinations need not be the coolest tokens of this map.

The batch is two copies of the same input: tomesd (and so ToMe) draws random destinations only for even
batches and falls back on top-left ones for odd batches; the numbers are those of the first copy.
Nothing here imports gradio.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bigain import viz
from bigain.backbones import adapter_for
from bigain.errors import BadInput, BadType, check_int, check_number
from bigain.methods import IEKVD, LGTM, Baseline, FreqKV, Method, ToDo, ToMe
from bigain.ops.laplacian import laplacian_score
from bigain.pipelines.generate import MAX_SEED
from bigain.record import record

#: the largest merge ratio a 2×2 cell allows (one destination per cell)
MAX_RATIO = 0.75
#: method keys, in the order they are run and plotted
KEYS = ("baseline", "tome", "lgtm", "todo", "iekvd", "freqkv-high", "freqkv-low")
#: the datasets of the embedded models: card-name prefix → module with ``load("test")``
DATASETS = {"digits": "bigain.digits", "glyphs": "bigain.glyphs"}

ImageSource = str | torch.Tensor | Callable[..., torch.Tensor] | Any


@dataclass
class MethodError:
    """One method at the layer. Errors are relative (0 = identical to the uncompressed run):

    layer / edge / smooth: ‖Δ‖ / ‖y‖ of the attention output over all / edge / smooth tokens;
    eps: ‖Δε‖ / ‖ε‖ of the final prediction; input_drift: the same for the layer's input (0 unless a
    layer before it is compressed); error: (h, w) per-token ‖Δ_n‖ / mean_n ‖y_n‖;
    groups: (h·w,) position each token was merged into, dst: destination positions (merge methods);
    merged: (h, w) int8, 0 = left alone, 1 = merged away (a source), 2 = a destination that absorbed some."""

    key: str
    label: str
    n_q: int
    n_kv: int
    layer: float
    edge: float
    smooth: float
    eps: float
    input_drift: float
    error: np.ndarray
    groups: np.ndarray | None = None
    dst: np.ndarray | None = None
    merged: np.ndarray | None = None


@dataclass
class Figure6Inside:
    """The experiment's numbers and maps. image: the clean image, (R, R) or (R, R, 3) in [0, 1];
    energy: (h, w) Laplacian ℓ1 energy of the hidden states entering the layer's self-attention;
    edge / smooth: (h, w) boolean masks (disjoint: ``N // 4`` and ``N // 2`` tokens)."""

    model: str
    condition: str
    seed: int
    t: int
    ratio: float
    factor: int
    alpha: float
    block: str
    h: int
    w: int
    channels: int
    source: str
    image: np.ndarray
    energy: np.ndarray
    edge: np.ndarray
    smooth: np.ndarray
    methods: dict[str, MethodError] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per method: key, label, tokens seen, and the errors."""
        keys = ("key", "label", "n_q", "n_kv", "layer", "edge", "smooth", "eps", "input_drift")
        return [{k: getattr(m, k) for k in keys} for m in self.methods.values()]

    def to_json(self) -> dict[str, Any]:
        """The numbers (no maps), for a JSON file."""
        head = ("model", "condition", "seed", "t", "ratio", "factor", "alpha", "block", "h", "w", "channels")
        return {**{k: getattr(self, k) for k in head}, "source": self.source, "methods": self.rows()}

    def table(self) -> str:
        """The numbers as a Markdown table."""
        lines = [
            "| method | queries / keys | layer error | edge | smooth | edge / smooth | ε error |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in self.methods.values():
            ratio = f"{m.edge / m.smooth:.2f}" if m.smooth > 0 else "–"
            lines.append(
                f"| {m.label} | {m.n_q} / {m.n_kv} | {m.layer:.4f} | {m.edge:.4f} | {m.smooth:.4f} | {ratio} "
                f"| {m.eps:.4f} |"
            )
        return "\n".join(lines)


# ---- inputs -------------------------------------------------------------------------------------


def methods_for(ratio: float, factor: int = 2, alpha: float = 0.9) -> dict[str, Method]:
    """The compared methods by key (see :data:`KEYS`)."""
    return {
        "baseline": Baseline(),
        "tome": ToMe(ratio=ratio),
        "lgtm": LGTM(ratio=ratio),
        "todo": ToDo(factor=factor),
        "iekvd": IEKVD(factor=factor, alpha=alpha),
        "freqkv-high": FreqKV(factor=factor, keep="high"),
        "freqkv-low": FreqKV(factor=factor, keep="low"),
    }


def dataset_of(model: Any) -> Any:
    """The module holding ``model``'s data (``load("test")`` → images (N, 1, R, R) in [-1, 1], labels)."""
    name = model.card.name
    for prefix, module in DATASETS.items():
        if name.startswith(prefix):
            return importlib.import_module(module)
    raise BadInput(
        f"{name} has no bundled dataset to take a test image from; pass image='generated' or an image "
        f"(datasets exist for {', '.join(p + '-*' for p in DATASETS)})"
    )


def clean_image(model: Any, class_id: int, seed: int, image: ImageSource = "test") -> tuple[torch.Tensor, str]:
    """The clean image x0, (1, C_img, R, R) in [-1, 1], and a word on where it came from.

    image: ``"test"`` (the ``seed``-th test image of the class, cycling, from :func:`dataset_of`),
    ``"generated"`` (the model's own sample of the class, uncompressed, with ``seed``), a callable
    ``(model, class_id, seed) → image``, or any image :meth:`LoadedModel.preprocess` takes."""
    if isinstance(image, str) and image == "test":
        x, y = dataset_of(model).load("test")
        idx = torch.nonzero(torch.as_tensor(y) == class_id).reshape(-1)
        if idx.numel() == 0:
            raise BadInput(f"the test split of {model.card.name} has no image of class {model.classes[class_id]!r}")
        k = int(idx[seed % idx.numel()])
        x0 = x[k : k + 1].float()
        source = f"test image #{k} (class {model.classes[class_id]})"
    elif isinstance(image, str) and image == "generated":
        from bigain.pipelines import generate

        x0 = model.preprocess(generate(model, class_id, seed=seed).images[0])
        source = f"the model's own sample (seed {seed}, uncompressed)"
    elif callable(image) and not isinstance(image, torch.Tensor):
        x0 = model.preprocess(image(model, class_id, seed))
        source = f"{getattr(image, '__name__', 'a function')}(class {class_id}, seed {seed})"
    elif isinstance(image, str) and image.lower() in ("", "noise"):
        raise BadInput("image must be 'test', 'generated', an image or a file path")
    else:
        x0 = model.preprocess(image)
        source = "the given image"
    if x0.shape[-1] != model.resolution or x0.shape[-2] != model.resolution:
        x0 = F.interpolate(x0, size=(model.resolution, model.resolution), mode="bilinear", align_corners=False)
    if x0.shape[1] != model.image_channels:
        x0 = x0.mean(1, keepdim=True) if model.image_channels == 1 else x0.expand(-1, model.image_channels, -1, -1)
    return x0.clamp(-1, 1), source


def _block(model: Any, block: str | None, reference: Method) -> tuple[str, Any]:
    """The layer's name and its attention module (default: the first target ``reference`` compresses)."""
    from bigain.patch import compressed_blocks

    compressed = compressed_blocks(model.denoiser, reference)
    if not compressed:
        raise BadInput(f"{model.card.name}: no layer is compressed by default")
    name = compressed[0] if block is None else block
    if name not in compressed:
        raise BadInput(f"block must be one of the compressed layers ({', '.join(compressed)}), got {str(name)[:60]!r}")
    sites = {s.target.name: s.attn for s in adapter_for(model.denoiser)(model.denoiser).sites}
    return name, sites[name]


# ---- capture ------------------------------------------------------------------------------------


@dataclass
class _Capture:
    x: torch.Tensor | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    y: torch.Tensor | None = None


@contextmanager
def _capture(attn: torch.nn.Module) -> Iterator[_Capture]:
    """Hooks on one attention module: its first call's hidden states, keyword inputs and output."""
    cap = _Capture()

    def pre(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if cap.x is None:
            cap.x = (args[0] if args else kwargs["hidden_states"]).detach().clone()
            cap.kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}

    def post(module: torch.nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if cap.y is None:
            cap.y = (out[0] if isinstance(out, tuple) else out).detach().clone()

    handles = [
        attn.register_forward_pre_hook(pre, with_kwargs=True),
        attn.register_forward_hook(post, with_kwargs=True),
    ]
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (0 when both are zero)."""
    den = float(torch.linalg.vector_norm(b.double()))
    num = float(torch.linalg.vector_norm((a - b).double()))
    return 0.0 if num == 0 else num / max(den, 1e-30)


def masks(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge (the ``N // 4`` highest-energy tokens) and smooth (the ``N // 2`` lowest) masks, same shape as
    ``energy``; ties are broken by position (row-major), so the counts are exact."""
    flat = np.asarray(energy, dtype=np.float64).reshape(-1)
    n = flat.size
    order = np.argsort(-flat, kind="stable")
    edge = np.zeros(n, bool)
    edge[order[: max(1, n // 4)]] = True
    smooth = np.zeros(n, bool)
    smooth[order[::-1][: max(1, n // 2)]] = True
    smooth &= ~edge
    return edge.reshape(np.shape(energy)), smooth.reshape(np.shape(energy))


def _merged_map(groups: np.ndarray, h: int, w: int) -> np.ndarray:
    pos = np.arange(groups.size)
    out = np.zeros(groups.size, np.int8)
    out[groups != pos] = 1
    out[np.unique(groups[groups != pos])] = 2
    return out.reshape(h, w)


# ---- the experiment -----------------------------------------------------------------------------


@torch.no_grad()
def figure6_inside(
    model: Any,
    condition: int | str,
    seed: int = 0,
    t: int = 200,
    ratio: float = MAX_RATIO,
    block: str | None = None,
    image: ImageSource = "test",
    factor: int = 2,
    alpha: float = 0.9,
) -> Figure6Inside:
    """Run the Figure-6 / Table-12 experiment on ``model`` (a :class:`~bigain.models.LoadedModel` or a
    card name) for one class; see the module doc. ``seed`` picks the test image (or the generated one),
    the noise and ToMe's destinations; ``block``: a compressed layer's name (default: the first)."""
    from bigain.models import LoadedModel, load_model
    from bigain.patch import compress
    from bigain.patch import seed as seed_destinations
    from bigain.pipelines.generate import initial_noise

    if isinstance(model, str):
        model = load_model(model)
    if not isinstance(model, LoadedModel):
        raise BadType(f"model must be a LoadedModel or a model name, got {type(model).__name__}")
    if model.classes is None:
        raise BadInput(f"{model.card.name} is conditioned on text; this experiment needs a class-conditional model")
    class_id = model.class_id(condition)
    seed = check_int("seed", seed, 0, MAX_SEED)
    t = check_int("t", t, 0, 999)
    ratio = check_number("ratio", ratio)
    if not 0 < ratio <= MAX_RATIO:
        raise BadInput(
            f"ratio must be in (0, {MAX_RATIO:g}] (a 2×2 cell keeps at least its destination token), got {ratio:g}"
        )
    factor = check_int("factor", factor, 2, 8)
    alpha = check_number("alpha", alpha, 0, 2)
    methods = methods_for(ratio, factor, alpha)
    name, attn = _block(model, block, methods["lgtm"])

    x0, source = clean_image(model, class_id, seed, image)
    z0 = model.encode(x0).float()
    noise = initial_noise(model, 1, seed)
    tt = torch.tensor([t])
    x_t = model.noised(z0.cpu(), noise, tt)
    x2 = torch.cat([x_t, x_t])
    cond = model.condition([class_id, class_id])

    runs: dict[str, tuple[_Capture, torch.Tensor, Any]] = {}
    for key, method in methods.items():
        with compress(model, method), record(maps=True) as rec, _capture(attn) as cap:
            seed_destinations(model, seed)
            eps = model.eps(x2, t, cond)
        if cap.x is None or cap.y is None:
            raise RuntimeError(f"{name} was not called by {model.card.name}")
        events = [e for e in rec.events if e.block == name]
        runs[key] = (cap, eps[:1].float().cpu(), events[0] if events else None)

    base_cap, base_eps, _ = runs["baseline"]
    x = base_cap.x[:1].float().cpu()  # (1, N, C)
    n, c = x.shape[1], x.shape[2]
    h, w = _layer_grid(model, name, n)
    energy = laplacian_score(x, h, w)[0].reshape(h, w).numpy()
    edge, smooth = masks(energy)
    e_flat, s_flat = torch.from_numpy(edge.reshape(-1)), torch.from_numpy(smooth.reshape(-1))

    out = Figure6Inside(
        model=model.card.name,
        condition=str(model.classes[class_id]),
        seed=seed,
        t=t,
        ratio=ratio,
        factor=factor,
        alpha=alpha,
        block=name,
        h=h,
        w=w,
        channels=c,
        source=source,
        image=_display(x0),
        energy=energy,
        edge=edge,
        smooth=smooth,
    )
    for key, method in methods.items():
        cap, eps, ev = runs[key]
        ref = attn(cap.x, **cap.kwargs)  # outside a forward: the uncompressed attention, on this run's input
        ref = (ref[0] if isinstance(ref, tuple) else ref)[:1].float().cpu()
        y = cap.y[:1].float().cpu()
        d = (y - ref)[0]  # (N, C)
        per_token = torch.linalg.vector_norm(d.double(), dim=-1)
        scale = float(torch.linalg.vector_norm(ref[0].double(), dim=-1).mean())
        groups = None if ev is None or ev.groups is None else ev.groups.numpy()
        out.methods[key] = MethodError(
            key=key,
            label=method.label() if key != "baseline" else "no compression",
            n_q=n if ev is None else ev.n_q,
            n_kv=n if ev is None else ev.n_kv,
            layer=_rel(y, ref),
            edge=_rel(y[0, e_flat], ref[0, e_flat]),
            smooth=_rel(y[0, s_flat], ref[0, s_flat]),
            eps=_rel(eps, base_eps),
            input_drift=_rel(cap.x[:1].float().cpu(), x),
            error=(per_token / max(scale, 1e-30)).reshape(h, w).numpy(),
            groups=groups,
            dst=None if ev is None or ev.dst is None else ev.dst.numpy(),
            merged=None if groups is None else _merged_map(groups, h, w),
        )
    return out


def _layer_grid(model: Any, name: str, n: int) -> tuple[int, int]:
    """The (h, w) token grid of layer ``name`` at the model's latent size."""
    backbone = adapter_for(model.denoiser)(model.denoiser)
    target = next(t for t in backbone.targets if t.name == name)
    h, w = backbone.grid((model.latent_size, model.latent_size), target)
    if h * w != n:
        raise RuntimeError(f"{name}: {n} tokens do not form the {h}x{w} grid expected")
    return h, w


def _display(x0: torch.Tensor) -> np.ndarray:
    a = ((x0[0].float() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


# ---- the picture --------------------------------------------------------------------------------


def figure6_inside_figure(res: Figure6Inside) -> Any:
    """The Laplacian energy of the hidden states (edge tokens ringed), which tokens ToMe and L-GTM merged,
    their per-token error maps, and edge vs smooth error of every method (a matplotlib Figure)."""
    merges = {res.methods[k].label: (res.methods[k].groups, res.methods[k].dst) for k in ("tome", "lgtm")}
    errors = {res.methods[k].label: res.methods[k].error for k in ("tome", "lgtm")}
    bars = {m.label: (m.edge, m.smooth, m.eps) for k, m in res.methods.items() if k != "baseline"}
    title = (
        f"{res.model}, class {res.condition}, t = {res.t}, {viz.short_block(res.block)} "
        f"({res.h}×{res.w} tokens × {res.channels} channels), merge ratio {res.ratio:g}, KV factor {res.factor}"
    )
    return viz.figure6_inside(res.image, res.energy, res.edge, merges, errors, bars, title)
