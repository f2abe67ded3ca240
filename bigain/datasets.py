"""Evaluation datasets: class lists (names + the paper's prompts, shipped in ``bigain/data/``) and
adapters that turn what is on disk into an :class:`EvalDataset` of (image, label) pairs.

Adapters
* ``image_folder(root, classes)`` — ``root/<class>/<image>``; sub-folder names are matched against
  the class list (name or WordNet id, case- and ``_``/``-``-insensitive).
* ``pets(root)`` — Oxford-IIIT Pet as torchvision (or the original tarballs) lay it out on disk:
  ``[root/]oxford-iiit-pet/{images,annotations/test.txt}``; torchvision itself is not needed.
* ``digits(part)`` — the bundled scikit-learn digits split of :mod:`bigain.digits`.

Everything is checked when the dataset is built (folders, class names) or by :meth:`EvalDataset.check`
(image headers), so a malformed dataset fails with a clear ``ValueError`` before any model runs.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image

#: Built-in class lists: key → CSV file in ``bigain/data``.
CLASS_LISTS: dict[str, str] = {
    "pets": "pets.csv",
    "imagenet": "imagenet1k.csv",
    "imagenet1k": "imagenet1k.csv",
    "imagenet100": "imagenet100.csv",
    "digits": "digits.csv",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
DEFAULT_TEMPLATE = "a photo of a {}."
#: ``--dataset`` values of ``python -m bigain.evaluate``.
DATASETS = ("digits", "pets", "imagenet", "imagenet1k", "imagenet100", "folder")


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text).strip().lower()


@dataclass(frozen=True)
class ClassList:
    """Class names with their prompts. ``model_labels`` are the labels a class-conditional hub model
    (DiT-XL/2: ImageNet indices) is conditioned on; ``None`` means the position in the list."""

    key: str
    names: tuple[str, ...]
    prompts: tuple[str, ...]
    wnids: tuple[str, ...] | None = None
    model_labels: tuple[int, ...] | None = None
    _lookup: dict[str, int | None] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.prompts):
            raise ValueError(f"class list {self.key!r}: needs ≥1 class and one prompt per class")
        for keys in (self.names, self.wnids or ()):
            for i, k in enumerate(keys):
                n = _norm(k)
                # an ambiguous name (ImageNet has two "missile" classes) maps to None: use the wnid
                self._lookup[n] = None if n in self._lookup and self._lookup[n] != i else i

    def __len__(self) -> int:
        return len(self.names)

    def index(self, folder: str) -> int | None:
        """Class index of a folder/class name (name or WordNet id), or None if unknown/ambiguous."""
        return self._lookup.get(_norm(folder))

    def suggest(self, folder: str) -> list[str]:
        return difflib.get_close_matches(_norm(folder), [k for k, v in self._lookup.items() if v is not None], n=3)

    def record(self) -> dict[str, Any]:
        """What a result file stores about the classes (enough to check a rerun uses the same)."""
        return {"key": self.key, "n": len(self), "first": self.names[0], "prompt_0": self.prompts[0]}


def _read_csv(text: str, key: str) -> ClassList:
    rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
    if not rows or not {"index", "name"} <= set(rows[0]):
        raise ValueError(f"class list {key!r}: needs a header with at least 'index' and 'name' columns")
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"class list {key!r}: 'index' must run 0, 1, 2, … in order")
    names = tuple(r["name"] for r in rows)
    prompts = tuple(r.get("prompt") or DEFAULT_TEMPLATE.format(r["name"]) for r in rows)
    wnids = tuple(r["wnid"] for r in rows) if "wnid" in rows[0] else None
    labels = tuple(int(r["imagenet_index"]) for r in rows) if "imagenet_index" in rows[0] else None
    if labels is None and wnids is not None and len(rows) == 1000:
        labels = tuple(range(1000))
    return ClassList(key, names, prompts, wnids, labels)


def class_list(name_or_path: str) -> ClassList:
    """A built-in list (``pets``, ``imagenet``/``imagenet1k``, ``imagenet100``, ``digits``) or a CSV
    file with ``index,name[,prompt][,wnid][,imagenet_index]`` columns (``#`` lines are comments)."""
    key = name_or_path.lower()
    if key in CLASS_LISTS:
        text = resources.files("bigain").joinpath("data", CLASS_LISTS[key]).read_text(encoding="utf-8")
        return _read_csv(text, key)
    path = Path(name_or_path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _read_csv(path.read_text(encoding="utf-8"), str(path))
    raise ValueError(f"unknown class list {name_or_path!r}: use one of {sorted(CLASS_LISTS)} or a path to a .csv file")


def folder_classes(folders: Sequence[str], template: str = DEFAULT_TEMPLATE) -> ClassList:
    """A class list made from sub-folder names (``_``/``-`` read as spaces) and a prompt template."""
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}', got {template!r}")
    names = tuple(re.sub(r"[_\-]+", " ", f).strip() for f in folders)
    return ClassList("folders", names, tuple(template.format(n) for n in names))


@dataclass
class EvalDataset:
    """Images with labels (indices into ``classes``). Images are files (``paths``) or, for the
    bundled digits, an in-memory tensor (N, 1, H, W) in [-1, 1]."""

    name: str
    classes: ClassList
    labels: tuple[int, ...]
    paths: tuple[str, ...] | None = None
    tensors: torch.Tensor | None = None
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.paths) if self.paths is not None else 0 if self.tensors is None else len(self.tensors)
        if n != len(self.labels):
            raise ValueError(f"{self.name}: {n} images but {len(self.labels)} labels")
        if n == 0:
            raise ValueError(f"{self.name}: the dataset holds no images ({self.source})")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image | torch.Tensor:
        """Image ``i``: an RGB PIL image, or for digits a (1, H, W) tensor in [-1, 1]."""
        if self.tensors is not None:
            return self.tensors[i]
        assert self.paths is not None
        try:
            with Image.open(self.paths[i]) as im:
                return im.convert("RGB")
        except OSError as e:
            raise ValueError(f"{self.name}: cannot read image {self.paths[i]}: {e}") from e

    def check(self, indices: Sequence[int]) -> list[str]:
        """Open the header of every listed image file; returns the unreadable ones ('path: reason')."""
        if self.paths is None:
            return []
        bad = []
        for i in indices:
            try:
                with Image.open(self.paths[i]) as im:
                    if min(im.size) < 1:
                        raise OSError("empty image")
            except (OSError, ValueError) as e:
                bad.append(f"{self.paths[i]}: {e}")
        return bad

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "n_images": len(self), "classes": self.classes.record()}


def _images_in(folder: Path) -> list[Path]:
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS)


def image_folder(
    root: str | Path,
    classes: ClassList | None = None,
    *,
    template: str = DEFAULT_TEMPLATE,
    name: str = "folder",
    skip_known_extra: bool = False,
) -> EvalDataset:
    """``root/<class>/<image>`` → dataset. Without ``classes`` the sorted sub-folder names are the
    classes (prompts from ``template``). With ``classes`` every sub-folder must name one of them;
    ``skip_known_extra`` skips folders that are ImageNet-1K wnids missing from the list (an
    ImageNet val folder read as ImageNet-100)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        n_top = len(_images_in(root))
        raise ValueError(
            f"{root} has no class sub-folders (expected {root}/<class>/<image>); "
            f"it holds {n_top} image files at the top level"
        )
    if classes is None:
        classes = folder_classes([d.name for d in subdirs], template)
        mapping = {d: i for i, d in enumerate(subdirs)}
    else:
        mapping = _match_folders(root, subdirs, classes, skip_known_extra)
    empty = [d.name for d in mapping if not _images_in(d)]
    if empty:
        raise ValueError(f"{root}: class folder(s) without images ({', '.join(IMAGE_EXTENSIONS)}): {empty[:10]}")
    paths: list[str] = []
    labels: list[int] = []
    for d, label in sorted(mapping.items(), key=lambda kv: (kv[1], kv[0].name)):
        files = _images_in(d)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return EvalDataset(name, classes, tuple(labels), tuple(paths), source=str(root))


def _match_folders(root: Path, subdirs: list[Path], classes: ClassList, skip_known_extra: bool) -> dict[Path, int]:
    imagenet = class_list("imagenet1k") if skip_known_extra else None
    mapping: dict[Path, int] = {}
    unknown: list[str] = []
    for d in subdirs:
        idx = classes.index(d.name)
        if idx is not None:
            mapping[d] = idx
        elif imagenet is None or imagenet.index(d.name) is None:
            hint = classes.suggest(d.name)
            unknown.append(f"{d.name!r}" + (f" (did you mean {hint}?)" if hint else ""))
    if unknown:
        raise ValueError(
            f"{root}: {len(unknown)} sub-folder(s) do not name a class of the {classes.key!r} list "
            f"({len(classes)} classes, matched by name or wnid): {', '.join(unknown[:10])}"
        )
    dup = [i for i in set(mapping.values()) if list(mapping.values()).count(i) > 1]
    if dup:
        raise ValueError(f"{root}: several sub-folders map to the same class: {[classes.names[i] for i in dup]}")
    if not mapping:
        raise ValueError(f"{root}: none of the sub-folders names a class of the {classes.key!r} list")
    return mapping


def pets(root: str | Path, split: str = "test") -> EvalDataset:
    """Oxford-IIIT Pet, ``split`` in {"test", "trainval"}, from the torchvision/original layout
    ``[root/]oxford-iiit-pet/images/*.jpg`` + ``annotations/<split>.txt`` (paper: test, 3669 images).
    A plain image folder with one sub-folder per breed also works."""
    root = Path(root)
    base = next((b for b in (root / "oxford-iiit-pet", root) if (b / "annotations").is_dir()), None)
    classes = class_list("pets")
    if base is None:
        return image_folder(root, classes, name="pets")
    if split not in ("test", "trainval"):
        raise ValueError(f"pets split must be 'test' or 'trainval', got {split!r}")
    ann = base / "annotations" / f"{split}.txt"
    if not ann.is_file():
        raise ValueError(f"{ann} is missing: is {base} an Oxford-IIIT Pet download?")
    paths, labels = [], []
    for ln, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        if len(parts) < 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
            raise ValueError(f"{ann}:{ln}: expected '<image> <class id 1..37> …', got {line!r}")
        paths.append(str(base / "images" / f"{parts[0]}.jpg"))
        labels.append(int(parts[1]) - 1)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) listed in {ann} are missing, e.g. {missing[:3]}")
    return EvalDataset(f"pets-{split}", classes, tuple(labels), tuple(paths), source=str(base))


def digits(part: str = "test") -> EvalDataset:
    """The bundled scikit-learn digits (:func:`bigain.digits.load`), images (N, 1, 16, 16) in [-1, 1]."""
    from bigain import digits as d

    images, labels = d.load(part)
    src = f"sklearn load_digits, {part} split of bigain.digits ({d.split_record()['rule']})"
    return EvalDataset(
        f"digits-{part}", class_list("digits"), tuple(int(v) for v in labels), tensors=images, source=src
    )


def open_dataset(
    kind: str,
    root: str | Path | None = None,
    classes: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    split: str | None = None,
) -> EvalDataset:
    """The CLI's entry point: ``kind`` in {digits, pets, imagenet, imagenet100, folder}."""
    kind = kind.lower()
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset {kind!r}: use one of {', '.join(DATASETS)}")
    if kind == "digits":
        return digits(split or "test")
    if root is None:
        raise ValueError(f"dataset {kind!r} needs --data-root (the folder on disk)")
    if kind == "pets":
        return pets(root, split or "test")
    if kind in ("imagenet", "imagenet1k", "imagenet100"):
        key = "imagenet100" if kind == "imagenet100" else "imagenet1k"
        return image_folder(root, class_list(classes or key), name=key, skip_known_extra=key == "imagenet100")
    if kind == "folder":
        cl = class_list(classes) if classes else None
        return image_folder(root, cl, template=template, name=Path(root).name or "folder")
    raise AssertionError(kind)
