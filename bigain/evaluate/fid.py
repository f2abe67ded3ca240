"""FID for generation runs.

* Hub models (photos): Inception FID with a maintained library, **optional** — pytorch-fid (what the
  paper used) or torch-fidelity — computed only when the library is importable and its Inception
  weights are already in the torch hub cache (we never download). Otherwise the result says which
  command computes it.
* Embedded models (a dataset of their world, :mod:`bigain.worlds`: ``digits-test``, …): Inception
  features mean nothing on 16×16 digits or 32×32 glyphs, so the Fréchet distance is taken in the
  feature space of the world's reference classifier (digits: :func:`bigain.digits.reference`, an
  MLP; glyphs: :func:`bigain.glyphs.reference`, a CNN), labelled as such, with the conditional
  accuracy of the samples.

Real images: ``out/real/<index>.<ext>`` holds one entry per evaluated image — a symlink to the
dataset file (a copy where links are not possible), or a PNG for in-memory datasets.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bigain.datasets import EvalDataset

PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
DIGITS_FEATURES = "digits-MLP (128-d hidden layer)"
#: The feature space of each world's reference classifier, as the tables label it.
WORLD_FEATURES = {"digits": DIGITS_FEATURES, "glyphs": "glyphs-CNN (128-d hidden layer)"}


def link_real(dataset: EvalDataset, i: int, real_dir: Path) -> Path:
    """Make ``real_dir/<i>.<ext>`` stand for image i (idempotent). Extensions are lower case
    because pytorch-fid only globs lower-case ones (ImageNet files end in .JPEG)."""
    real_dir.mkdir(parents=True, exist_ok=True)
    if dataset.paths is None:
        dst = real_dir / f"{i:06d}.png"
        if not dst.exists():
            x = dataset.tensors[i]  # (C, H, W) in [-1, 1]
            arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(tmp, format="PNG")
            os.replace(tmp, dst)
        return dst
    src = Path(dataset.paths[i]).resolve()
    dst = real_dir / f"{i:06d}{src.suffix.lower()}"
    if not dst.exists():
        try:
            dst.symlink_to(src)
        except OSError:
            shutil.copyfile(src, dst)
    return dst


def _hub_weights(name: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def backend() -> tuple[str | None, str]:
    """Which Inception-FID library can run here without a download, and why not if none."""
    reasons = []
    for lib, module, weights in (
        ("pytorch-fid", "pytorch_fid", PYTORCH_FID_WEIGHTS),
        ("torch-fidelity", "torch_fidelity", TORCH_FIDELITY_WEIGHTS),
    ):
        try:
            __import__(module)
        except ImportError:
            reasons.append(f"{lib} is not installed")
            continue
        if _hub_weights(weights) is None:
            reasons.append(
                f"{lib}'s Inception weights {weights} are not in {Path(torch.hub.get_dir()) / 'checkpoints'}"
            )
            continue
        return lib, ""
    return None, "; ".join(reasons)


def inception_fid(lib: str, real: Path, gen: Path) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if lib == "pytorch-fid":
        from pytorch_fid.fid_score import calculate_fid_given_paths

        # batch 1: the real images keep their own sizes, as in the paper's FID command
        return float(calculate_fid_given_paths([str(real), str(gen)], 1, device, 2048, num_workers=0))
    import torch_fidelity

    m = torch_fidelity.calculate_metrics(
        input1=str(gen), input2=str(real), fid=True, cuda=device == "cuda", batch_size=1, verbose=False
    )
    return float(m["frechet_inception_distance"])


def how_to(out: Path, slugs: dict[str, str], reason: str) -> str:
    cmds = "\n".join(
        f"    python -m pytorch_fid {out / 'real'} {out / 'images' / s} --batch-size 1" for s in slugs.values()
    )
    return (
        f"FID not computed ({reason}). With `pip install pytorch-fid` and its Inception weights "
        f"(downloaded on first use into {Path(torch.hub.get_dir()) / 'checkpoints'}), run, per method:\n\n"
        f"{cmds}\n\nOnce pytorch-fid and its weights are present, `python -m bigain.evaluate report {out}` "
        "computes FID itself and puts it in the table."
    )


def _load_digits(folder: Path, names: list[str], size: int | None = None) -> torch.Tensor:
    """PNG files → (N, 1, size, size) in [-1, 1] (default: the digits' 16)."""
    from bigain.digits import SIZE

    size = size or SIZE
    arrs = []
    for n in names:
        with Image.open(folder / n) as im:
            arrs.append(np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32))
    return torch.from_numpy(np.stack(arrs))[:, None] / 127.5 - 1


def world_of_run(run: dict[str, Any]) -> Any:
    """The world (:mod:`bigain.worlds`) whose reference classifier scores this run's samples: the one
    its dataset is named after (``digits-test`` → digits), else None (photos: Inception FID)."""
    from bigain import worlds

    name = run["dataset"]["name"].split("-")[0]
    if name not in WORLD_FEATURES:
        return None
    return worlds.world(name)


def digits_scores(
    out: Path, run: dict[str, Any], records: list[dict[str, Any]], world: Any = None
) -> dict[str, dict[str, Any]]:
    """Fréchet distance in the reference classifier's feature space of the run's world (default:
    digits; generated vs the real images of the same subset) and the fraction of samples it labels
    as the requested class."""
    from bigain import digits, worlds

    world = world or worlds.world("digits")
    ref = world.reference()
    images = run["indices"]
    real = _load_digits(out / "real", [f"{i:06d}.png" for i in images], world.size)
    real_f = ref.features(real)
    res: dict[str, dict[str, Any]] = {}
    for key, slug in run["slugs"].items():
        recs = {r["image"]: r for r in records if r["method"] == key}
        if key not in run["methods"] or len(recs) != len(images):
            continue
        gen = _load_digits(out / "images" / slug, [f"{i:06d}.png" for i in images], world.size)
        labels = np.array([recs[i]["label"] for i in images])
        with warnings.catch_warnings():  # few images → singular covariances; the number is still defined
            warnings.simplefilter("ignore")
            fd = digits.frechet_distance(real_f, ref.features(gen)) if len(images) >= 2 else None
        res[key] = {
            "fid": fd,
            "fid_features": WORLD_FEATURES.get(world.name, f"{world.name} reference (hidden layer)"),
            "cond_acc": 100 * float((ref.predict(gen) == labels).mean()),
        }
    return res


def evaluate_fid(
    out: Path, run: dict[str, Any], records: list[dict[str, Any]], log: Callable[..., Any] = print
) -> tuple[dict[str, dict[str, Any]], str]:
    """Scores per method key, and a note (how to compute FID when it could not be computed here)."""
    world = world_of_run(run)
    if world is not None:
        return digits_scores(out, run, records, world), (
            f"FID here is a Fréchet distance in the {WORLD_FEATURES[world.name]} feature space of "
            f"bigain.{world.name}.reference(), not Inception FID ({world.name} are not photos); cond. acc = % of "
            "samples that classifier labels as the requested class."
        )
    lib, reason = backend()
    slugs = {k: v for k, v in run["slugs"].items() if k in run["methods"]}
    if lib is None:
        note = how_to(out, slugs, reason)
        log(note)
        return {}, note
    res = {}
    for key, slug in slugs.items():
        n_done = sum(1 for r in records if r["method"] == key)
        if n_done != len(run["indices"]):
            continue
        log(f"FID ({lib}) for {run['methods'][key]['label']} …")
        res[key] = {
            "fid": inception_fid(lib, out / "real", out / "images" / slug),
            "fid_features": f"Inception ({lib})",
        }
    return (
        res,
        f"FID: {lib}, Inception pool3 (2048-d), generated vs the {len(run['indices'])} real images in {out / 'real'}.",
    )
