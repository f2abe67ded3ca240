"""The glyph world: fonts, split, renderings, the reference classifier, threads and resumable training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bigain import glyphs, threads, worlds, zoo
from bigain.errors import BadInput


def test_every_face_renders_every_capital() -> None:
    assert len(glyphs.FACES) == 22 and glyphs.NUM_CLASSES == 26
    for face in glyphs.FACES:
        ims = np.stack([glyphs.render(face, c) for c in glyphs.CLASSES])
        assert ims.shape == (26, glyphs.SIZE, glyphs.SIZE) and ims.dtype == np.float32
        assert ims.min() >= -1 and ims.max() <= 1
        ink = (ims > 0).mean(axis=(1, 2))
        assert (ink > 0.02).all() and (ink < 0.6).all(), face  # a letter, not an empty or filled square
        # 26 different shapes: no two capitals of a face render alike
        flat = ims.reshape(26, -1)
        d = ((flat[:, None] - flat[None]) ** 2).mean(-1) + np.eye(26) * 9
        assert d.min() > 0.01, face
        assert (ims[:, 0, :] == -1).all() and (ims[:, :, 0] == -1).all()  # nothing touches the border


def test_whole_fonts_are_held_out() -> None:
    assert set(glyphs.TEST_FACES) <= set(glyphs.FACES)
    assert not set(glyphs.TEST_FACES) & set(glyphs.TRAIN_FACES)
    assert len(glyphs.TRAIN_FACES) + len(glyphs.TEST_FACES) == len(glyphs.FACES)
    x, y = glyphs.load("test")
    assert x.shape == (5 * 26, 1, 32, 32) and y.tolist() == list(range(26)) * 5
    assert glyphs.faces_of("test") == [f for f in glyphs.TEST_FACES for _ in range(26)]
    rec = glyphs.split_record()
    assert rec["test_faces"] == list(glyphs.TEST_FACES) and rec["classes"] == list(glyphs.CLASSES)
    with pytest.raises(ValueError, match="part"):
        glyphs.load("validation")


def test_bank_is_deterministic_and_extends() -> None:
    a, ya = glyphs.load("test", per_glyph=2)
    b, yb = glyphs.load("test", per_glyph=3)
    assert torch.equal(a.view(-1, 2, 1, 32, 32), b.view(-1, 3, 1, 32, 32)[:, :2])
    assert torch.equal(ya.view(-1, 2), yb.view(-1, 3)[:, :2])
    plain, _ = glyphs.load("test")
    assert torch.equal(a[::2], plain)  # index 0 of every glyph is the un-jittered rendering
    assert (a[1::2] - a[::2]).abs().mean() > 0.05  # the others are jittered
    c, _ = glyphs.load("test", per_glyph=2, seed=1)
    assert torch.equal(c[::2], plain) and not torch.equal(c[1::2], a[1::2])


def test_jitter_moves_the_ink() -> None:
    base = glyphs.render("DejaVuSans.ttf", "E")
    centre = lambda im: np.argwhere(im > 0).mean(0)  # noqa: E731
    shifted = glyphs.render("DejaVuSans.ttf", "E", dx=2, dy=-2)
    assert np.allclose(centre(shifted) - centre(base), [-2, 2], atol=0.6)
    bold, thin = (glyphs.render("DejaVuSans.ttf", "E", stroke=s) for s in (2, -1))
    assert (bold > 0).sum() > (base > 0).sum() > (thin > 0).sum()
    assert not np.array_equal(glyphs.render("DejaVuSans.ttf", "E", rotate=8), base)


def test_reference_classifier_reads_held_out_fonts() -> None:
    ref = glyphs.reference()
    x, y = glyphs.load("test")
    acc = float((ref.predict(x) == y.numpy()).mean())
    assert acc == pytest.approx(ref.record["accuracy"]["test_plain"])  # the record is what the weights do
    assert acc >= 0.9
    f = ref.features(x)
    assert f.shape == (130, 128) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="expects"):
        ref.predict(torch.zeros(2, 1, 16, 16))


def test_worlds() -> None:
    g = worlds.world_of("glyphs-dit")
    assert g.name == "glyphs" and g.num_classes == 26 and g.size == 32
    assert worlds.world_of("glyphs-unet") == g or worlds.world_of("glyphs-unet").name == "glyphs"
    assert worlds.world_of("digits-dit").num_classes == 10
    x, _ = worlds.world_of("digits-unet").load("test")
    assert x.shape[-1] == 16
    with pytest.raises(BadInput, match="not an embedded"):
        worlds.world_of("sd2-base")
    with pytest.raises(BadInput, match="unknown world"):
        worlds.world("letters")


def _cgroup(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_threads_follow_quota_affinity_and_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert threads.available_cpus(_cgroup(tmp_path / "a", "200000 100000\n")) == 2
    assert threads.available_cpus(_cgroup(tmp_path / "b", "150000 100000\n")) == 1  # 1.5 CPUs: round down
    assert threads.available_cpus(_cgroup(tmp_path / "c", "50000 100000\n")) == 1  # at least one
    assert threads.available_cpus(_cgroup(tmp_path / "d", "max 100000\n")) == 8  # no quota: the affinity mask
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert threads.available_cpus(v1) == 3
    assert threads.available_cpus(tmp_path / "none") == 8
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0})
    assert threads.available_cpus(tmp_path / "d") == 1
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.default_threads(tmp_path / "a") == 3
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ValueError, match=threads.ENV):
            threads.default_threads(tmp_path / "a")
    before = torch.get_num_threads()
    try:
        assert threads.configure(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _tiny_glyph_arch() -> zoo.Arch:
    a = zoo.ARCHS["glyphs-dit"]
    return replace(a, config={**a.config, "num_layers": 1, "num_attention_heads": 1, "attention_head_dim": 8})


def test_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file

    from bigain import train as T

    monkeypatch.setattr(T, "GLYPH_BANK", 1)
    cfg = T.TrainConfig(steps=4, batch_size=2, log_every=1, checkpoint_every=2, warmup=1)
    whole = T.train("glyphs-dit", tmp_path / "whole", cfg, arch=_tiny_glyph_arch(), quiet=True)
    real_lr = T._lr

    def stop_at_3(step: int, c: T.TrainConfig) -> float:
        if step == 3:
            raise KeyboardInterrupt
        return real_lr(step, c)

    monkeypatch.setattr(T, "_lr", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        T.train("glyphs-dit", tmp_path / "cut", cfg, arch=_tiny_glyph_arch(), quiet=True)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    monkeypatch.setattr(T, "_lr", real_lr)
    resumed = T.train("glyphs-dit", tmp_path / "cut", cfg, arch=_tiny_glyph_arch(), quiet=True, resume=True)
    assert resumed["resumed"] and not whole["resumed"]
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # a finished run leaves no checkpoint
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [c["loss"] for c in whole["loss_curve"]] == [c["loss"] for c in resumed["loss_curve"]]
    assert resumed["split"]["test_faces"] == list(glyphs.TEST_FACES)
    other = T.TrainConfig(steps=4, batch_size=3, log_every=1, checkpoint_every=2, warmup=1)
    monkeypatch.setattr(T, "_lr", stop_at_3)
    with pytest.raises(KeyboardInterrupt):
        T.train("glyphs-dit", tmp_path / "x", cfg, arch=_tiny_glyph_arch(), quiet=True)
    with pytest.raises(ValueError, match="same flags"):
        T.train("glyphs-dit", tmp_path / "x", other, arch=_tiny_glyph_arch(), quiet=True, resume=True)


def test_progressive_stages_chain_and_resume_after_a_finished_stage(tmp_path: Path, monkeypatch, capsys) -> None:
    import argparse

    from safetensors.torch import load_file

    from bigain import train as T

    monkeypatch.setattr(T, "GLYPH_BANK", 1)
    stages = (T.Stage(2, 2, res=16, min_snr=5.0), T.Stage(2, 2, min_snr=5.0))
    a = argparse.Namespace(lr=1e-3, seed=0, checkpoint_every=1, device="cpu", resume=True, init=None)
    whole = T.run_stages("glyphs-dit", tmp_path / "whole", stages, a, "cmd", arch=_tiny_glyph_arch())
    assert whole["previous"]["train"]["res"] == 16 and whole["train"]["res"] is None  # 16×16 first, then 32×32
    assert whole["wall_s_total"] > whole["wall_s"] and not (tmp_path / "whole" / "stages").exists()
    real_lr = T._lr

    def die_in_stage_2(step: int, c: T.TrainConfig) -> float:
        if c.res is None and step == 1:
            raise KeyboardInterrupt
        return real_lr(step, c)

    monkeypatch.setattr(T, "_lr", die_in_stage_2)
    with pytest.raises(KeyboardInterrupt):
        T.run_stages("glyphs-dit", tmp_path / "cut", stages, a, "cmd", arch=_tiny_glyph_arch())
    assert (tmp_path / "cut" / "stages" / "1" / "model.safetensors").is_file()
    monkeypatch.setattr(T, "_lr", real_lr)
    capsys.readouterr()
    rec = T.run_stages("glyphs-dit", tmp_path / "cut", stages, a, "cmd", arch=_tiny_glyph_arch())
    assert "stage 1/2 already trained" in capsys.readouterr().out  # not trained again
    assert rec["resumed"]  # stage 2 continued from its checkpoint, not from scratch
    w1, w2 = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "cut"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # the same weights as the uninterrupted run


def test_min_snr_weights_only_the_nearly_clean_timesteps_down() -> None:
    from bigain import train as T

    acp = T._alphas_cumprod()
    w = T._weight(acp, 5.0)
    snr = acp / (1 - acp)
    assert torch.equal(T._weight(acp, None), torch.ones_like(acp))
    assert torch.all(w[snr <= 5] == 1) and torch.all(w[snr > 5] < 1) and w.min() > 0
    torch.testing.assert_close(w[snr > 5], 5 / snr[snr > 5])


def test_frame_keeps_training_glyphs_and_reframes_others() -> None:
    x, _ = glyphs.load("test")
    for im in x[::7]:
        framed = glyphs.frame(im[None])
        assert framed.shape == (1, 1, 32, 32)
        # already framed like the training glyphs: unchanged up to a one-pixel re-centring
        near = min(
            (framed - torch.roll(im, (dy, dx), (-2, -1))).abs().mean().item() for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        )
        assert near < 0.03
    big = torch.full((1, 1, 128, 128), -1.0)
    small = torch.nn.functional.interpolate(x[4:5], size=(40, 40), mode="bilinear", antialias=True)
    big[..., 70:110, 10:50] = small  # an E drawn small in a corner of a large canvas
    framed = glyphs.frame(big)
    assert (framed - glyphs.frame(x[4:5])).abs().mean() < 0.12
    assert torch.equal(glyphs.frame(torch.full((1, 1, 64, 64), -1.0)), torch.full((1, 1, 32, 32), -1.0))
