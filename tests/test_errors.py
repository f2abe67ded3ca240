"""Bad input gets one sentence naming the field and what is allowed, as a bigain error (a ValueError
or TypeError subclass) from the Python API and exit status 2 without a traceback from the CLI; no NaN
or inf reaches a model; types are checked, not coerced."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bigain
from bigain import cli
from bigain.errors import BadInput, BadType, BigainError, check_int, check_number


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels (its data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _good_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "white").save(buf, "PNG")
    return buf.getvalue()


FILES = {
    "text.png": (b"hello", "is not an image file"),
    "empty.png": (b"", "is an empty file"),
    "truncated.png": (_good_png()[:60], "truncated or corrupt"),
    "page.png": (b"<html><img src=x></html>", "is not an image file"),
    "big.png": (_png(10000, 10000), "10000×10000 pixels; at most 16.8 megapixels"),
    "bomb.png": (_png(60000, 60000), "more pixels than PIL will decode"),
}


@pytest.fixture(scope="module")
def dit():
    return bigain.load_model("digits-dit")


@pytest.mark.parametrize("name", sorted(FILES))
def test_bad_files_are_named_with_their_problem(dit, tmp_path: Path, name: str) -> None:
    data, message = FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadInput, match=message):
        bigain.classify(dit, path)


@pytest.mark.parametrize(
    "image",
    [
        torch.full((1, 16, 16), float("nan")),
        np.full((16, 16), np.inf),
        Image.fromarray(np.full((16, 16), np.nan, np.float32), "F"),
    ],
    ids=["tensor", "array", "pil-F"],
)
def test_no_nan_reaches_the_model(dit, image) -> None:
    with pytest.raises(BadInput, match="NaN or infinite"):
        bigain.classify(dit, image)


def test_empty_and_oversized_inputs(dit) -> None:
    with pytest.raises(BadInput, match="empty"):
        bigain.classify(dit, torch.zeros(0))
    with pytest.raises(BadInput, match="megapixels"):
        bigain.classify(dit, np.zeros((5000, 5000), np.uint8))


@pytest.mark.parametrize(
    "kw, kind, message",
    [
        ({"seed": "7"}, BadType, r"seed must be an integer in \[0, 4294967295\], got '7'"),
        ({"seed": 1.5}, BadType, "seed must be an integer"),
        ({"seed": True}, BadType, "got bool True"),
        ({"seed": float("inf")}, BadType, "seed must be an integer"),
        ({"seed": -1}, BadInput, r"seed must be an integer in \[0, 4294967295\], got -1"),
        ({"seed": 2**32}, BadInput, r"seed must be an integer in \[0, 4294967295\], got 4294967296"),
        ({"steps": 2.5}, BadType, r"steps must be an integer in \[1, 1000\]"),
        ({"steps": float("nan")}, BadType, "steps must be an integer"),
        ({"guidance": float("nan")}, BadInput, r"guidance must be a finite number in \[0, 50\]"),
        ({"num_images": 0}, BadInput, "num_images"),
        ({"sampler": 3}, BadType, r"sampler must be one of .* \(a str\), got int 3"),
        ({"sampler": "x" * 10**5}, BadInput, "sampler must be one of .*…$"),
    ],
)
def test_generate_checks_types_and_ranges(dit, kw, kind, message) -> None:
    with pytest.raises(kind, match=message):
        bigain.generate(dit, 3, **kw)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"temperature": 0}, "temperature must be a finite number"),
        ({"temperature": float("nan")}, "temperature"),
        ({"batch_size": 0}, r"batch_size must be an integer in \[1, 4096\]"),
        ({"classes": []}, "at least two candidate classes"),
        ({"seed": 2.5}, "seed must be an integer"),
    ],
)
def test_classify_checks_its_arguments(dit, kw, message) -> None:
    with pytest.raises(BigainError, match=message):
        bigain.classify(dit, np.zeros((16, 16)), **kw)


def test_models_devices_and_methods() -> None:
    with pytest.raises(BadInput, match="a model name or folder is needed"):
        bigain.load_model("")
    with pytest.raises(BadInput, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        bigain.load_model("digits-dit", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="this machine has no CUDA GPU"):
            bigain.load_model("digits-dit", device="cuda")
    net = bigain.patch.unpatched_copy(bigain.load_model("digits-dit"))
    bigain.apply(net, "lgtm:ratio=0.5")  # a spec string is a method too
    assert bigain.patch.active_method(net) == bigain.LGTM(ratio=0.5)
    with pytest.raises(BadInput, match="unknown method 'nope'"):
        bigain.apply(net, "nope")
    with pytest.raises(BadType, match="expected a bigain Method"):
        bigain.apply(net, 3)
    with pytest.raises(BadType, match=r"compressed_blocks takes a Method \(e.g. bigain.LGTM\(\)\), got 'lgtm'"):
        bigain.compressed_blocks(net, "lgtm")  # type: ignore[arg-type]


def test_errors_are_value_and_type_errors() -> None:
    assert issubclass(BadInput, ValueError) and issubclass(BadType, TypeError)
    assert issubclass(bigain.ModelUnavailable, BigainError) and issubclass(bigain.ModelUnavailable, OSError)
    assert check_int("n", np.int64(3), 0, 5) == 3 and check_number("x", 2, 0, 5) == 2.0
    with pytest.raises(BadType, match=r"'1{50,}…$"):
        check_int("n", "1" * 10_000)  # long echoes are cut


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "-c", "3", "--upscale", "-5"], "--upscale must be an integer in [1, 64], got -5"),
        (["generate", "-c", "3", "--out", "{tmp}"], "is a folder"),
        (["generate", "-c", "3", "--out", "{tmp}/x.nope"], "no image suffix"),
        (["inside", "-c", "3", "--method", "baseline"], "Baseline compresses nothing"),
        (["classify", "{tmp}/x.png"], "no image file at x.png"),
        (["generate", "-c", "3", "--device", "tpu"], "device must be"),
        (["generate", "--model", "", "-c", "3"], "a model name or folder is needed"),
        (["classify", "{tmp}/bad.png", "--temperature", "0"], "temperature must be a finite number"),
        (["classify", "{tmp}/bad.png"], "bad.png is not an image file"),
    ],
)
def test_cli_says_it_in_one_line_with_exit_2(args, message, tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.png").write_bytes(b"hello")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli.main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["1.5", "nan", "1" * 5000])
def test_cli_refuses_malformed_numbers_without_echoing_them(value: str, capsys) -> None:
    opt = "--guidance" if value == "nan" else "--seed"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "-c", "3", opt, value, "--quiet"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse: the usage, then one error line
    assert exit_.value.code == 2 and "error: argument" in last and len(last) < 200 and "Traceback" not in err


def test_exif_orientation_is_applied_and_the_callers_image_kept(tmp_path: Path) -> None:
    from bigain.images import _as_array

    stored = np.zeros((8, 16), np.uint8)
    stored[:, :4] = 255  # a bright band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "phone.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    upright = np.asarray(Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270), np.float64) / 255
    seen = _as_array(path)[..., 0]
    assert seen.shape == (16, 8) and np.array_equal(seen, upright)  # the band is on top, as a viewer shows it
    opened = Image.open(path)
    assert np.array_equal(_as_array(opened)[..., 0], upright)  # a PIL image too
    assert opened.getexif().get(0x0112) == 6  # the caller's image is left as it was


def test_huge_inputs_are_reduced_before_they_become_arrays(tmp_path: Path) -> None:
    from bigain.images import MAX_SIDE, _as_array, read_image

    big = Image.new("L", (4096, 3072), 0)  # 12.6 MP: accepted, like a phone photo
    big.paste(255, (0, 0, 2048, 3072))
    png, jpg = tmp_path / "big.png", tmp_path / "big.jpg"
    big.save(png)
    big.save(jpg, quality=90)
    for path in (png, jpg):
        im = read_image(path)
        assert max(im.size) <= MAX_SIDE and im.size[0] / im.size[1] == 4 / 3  # reduced, shape kept
        arr = _as_array(path)
        assert arr.shape[:2] == (im.size[1], im.size[0]) and abs(arr[..., 0].mean() - 0.5) < 0.02
    assert max(_as_array(big).shape[:2]) == MAX_SIDE  # a PIL image given directly, too
    deep = Image.fromarray(np.full((2400, 3000), 40000, np.uint16))  # 16-bit grey, larger than MAX_SIDE
    deep.save(tmp_path / "deep.png")
    arr = _as_array(tmp_path / "deep.png")
    assert max(arr.shape[:2]) == MAX_SIDE and abs(float(arr.mean()) - 40000 / 65535) < 1e-3  # its scale kept
