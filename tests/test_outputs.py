"""Entry scripts and files fail fast and never leave partial output: OUT checked before any work,
staged output moved into place whole, one-line errors for empty or foreign checkpoints, umask modes."""
from __future__ import annotations

import dataclasses
import os
import stat
import time

import pytest
import torch

from common.checkpoint import export_state, shipped_form
from common.data import staged_output_dir
from common.errors import UserError
from common.training import atomic_torch_save, atomic_write_json, load_checkpoint, remove_stale_temps
from p1_gan import inference as p1
from p1_gan.config import build_models, method_defaults
from p2_diffusion_acgan import inference as p2
from p2_diffusion_acgan.config import DiffusionConfig, build_unet
from p3_dann import inference as p3


@pytest.fixture
def face_ckpt(tmp_path):
    cfg = dataclasses.replace(method_defaults("B"), ngf=4, ndf=4)
    G, D = build_models(cfg)
    path = tmp_path / "b.pt"
    export_state({"config": dataclasses.asdict(cfg), "step": 1, "G": G.state_dict(), "D": D.state_dict(), "ema": None},
                 path, include_d=True)
    return path


@pytest.fixture
def digit_ckpt(tmp_path):
    cfg = DiffusionConfig(base_channels=8, channel_mults=(1, 1, 1), dropout=0.0, sample_steps=1)
    path = tmp_path / "d.pt"
    torch.save(shipped_form(dataclasses.asdict(cfg), build_unet(cfg).state_dict(), 1, kind="p2_diffusion"), path)
    return path


def test_bad_output_folders_fail_before_any_work(face_ckpt, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(p1, "load_models", lambda *a, **k: calls.append(1))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="a_file is an existing file"):
        p1.main([str(tmp_path / "a_file"), "--checkpoint", str(face_ckpt)])
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not images \\(notes.txt\\)"):
        p1.main([str(tmp_path / "mixed"), "--checkpoint", str(face_ckpt)])
    with pytest.raises(UserError, match="a_file is an existing file"):
        p2.main([str(tmp_path / "a_file")])
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(UserError, match="a_dir is an existing folder"):
        p3.main([str(tmp_path / "x_usps"), str(tmp_path / "a_dir"), "usps"])
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(UserError, match="not writable"):
            p1.main([str(ro / "out"), "--checkpoint", str(face_ckpt)])
    assert calls == []  # no checkpoint was even loaded


def test_rerun_replaces_the_output_whole_and_a_failed_run_keeps_the_old_one(face_ckpt, tmp_path, monkeypatch, capsys):
    out = tmp_path / "faces"
    assert p1.main([str(out), "--checkpoint", str(face_ckpt), "--n", "5"]) == 0
    assert "seed 0" in capsys.readouterr().out  # it says what produced the output
    assert p1.main([str(out), "--checkpoint", str(face_ckpt), "--n", "3"]) == 0
    assert sorted(os.listdir(out)) == ["0000.png", "0001.png", "0002.png"]  # no stale files of the first run
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def dies(x, path):
        raise KeyboardInterrupt  # a run stopped while writing
    monkeypatch.setattr("common.data.save_png", dies)
    with pytest.raises(KeyboardInterrupt):
        p1.main([str(out), "--checkpoint", str(face_ckpt), "--n", "4", "--seed", "1"])
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.pt", "faces"]  # no partial folder left


def test_staging_folder_of_a_killed_run_is_cleared_next_time(tmp_path):
    (tmp_path / ".out.partial-abc").mkdir()  # what a SIGKILL leaves
    with staged_output_dir(tmp_path / "out") as stage:
        (stage / "0.png").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_and_foreign_checkpoints_are_one_line_errors(face_ckpt, digit_ckpt, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserError, match="empty.pt is empty \\(0 bytes\\)"):
        load_checkpoint(tmp_path / "empty.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="not a checkpoint of this project \\(a list"):
        p2.main([str(tmp_path / "o"), "--checkpoint", str(tmp_path / "list.pt")])
    usps = tmp_path / "usps"
    usps.mkdir()
    for ck in (face_ckpt, digit_ckpt):
        with pytest.raises(UserError, match="is not a p3_dann checkpoint"):
            p3.main([str(usps), str(tmp_path / "p.csv"), "--checkpoint", str(ck)])


def test_hw2_2_refuses_options_its_model_would_ignore(digit_ckpt, tmp_path):
    for bad, msg in ((["--guidance", "nan"], "--guidance must be a finite number"),
                     (["--candidates", "4"], "--candidates: GAN sampling options"),
                     (["--truncation", "0.5", "--accept-prob", "0.9"], "--truncation, --accept-prob: GAN sampling")):
        with pytest.raises(UserError, match=msg):
            p2.main([str(tmp_path / "o"), "--checkpoint", str(digit_ckpt), *bad])
    assert not (tmp_path / "o").exists()


def test_written_files_get_the_umask_mode_and_killed_saves_leave_no_temps(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    for name in ("a.json", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    stale = tmp_path / ".last.pt.x1.tmp"  # what a SIGKILL during a save leaves
    stale.write_bytes(b"junk")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    (tmp_path / ".last.pt.fresh.tmp").write_bytes(b"a save in progress")
    assert remove_stale_temps(tmp_path / "last.pt") == 1
    atomic_torch_save({"x": torch.ones(1)}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.fresh.tmp", "a.json", "last.pt"]
