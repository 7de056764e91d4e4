"""The CPU-side parts of scripts/train_gpu.sh (the lent-GPU run): pack -> unpack -> detached jobs with a
shared deadline -> bundles of at most 8 files -> extract, on tiny data with GPU_TINY=1."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, make_face_folder

sys.path.insert(0, str(REPO / "scripts"))
import gpu_pack  # noqa: E402


def test_pack_roundtrip_keeps_images_close_and_names(tiny_digits, tmp_path):
    tiny_root = tiny_digits
    face = make_face_folder(tiny_root / "face" / "train", 6, ext=".jpg")
    # smooth faces: WebP is lossy but must stay close on natural-looking images
    for i, p in enumerate(sorted(face.iterdir())):
        yy, xx = np.mgrid[0:64, 0:64]
        img = np.stack([(xx * 4 + i) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
        Image.fromarray(img).save(p)
    for i in range(2):  # two halves, as they travel beside the tracked tree
        gpu_pack.pack("faces", tiny_root, tmp_path / "carry" / f"faces_{i}", workers=1, part=(i, 2))
    for i in range(2):  # digits travel lossless (WebP q90 cost real images 7.7 FID points), in parts too
        gpu_pack.pack("digits", tiny_root, tmp_path / "carry" / f"digits_{i}", workers=1, part=(i, 2),
                      classifier=tiny_root / "digits" / "mnistm" / "train.csv")  # any file travels byte-exact
    out = tmp_path / "gpu_data"
    assert gpu_pack.unpack(tmp_path / "carry" / "faces_0", out, workers=1) == "faces"
    assert len(list((out / "face" / "train").iterdir())) == 3
    assert gpu_pack.unpack(tmp_path / "carry" / "faces_1", out, workers=1) == "faces"
    assert gpu_pack.unpack(tmp_path / "carry" / "digits_0", out, workers=1) == "digits"
    assert len(list((out / "digits" / "mnistm" / "data").iterdir())) == 20
    assert gpu_pack.unpack(tmp_path / "carry" / "digits_1", out, workers=1) == "digits"
    got = sorted((out / "face" / "train").iterdir())
    assert [p.stem for p in got] == [p.stem for p in sorted(face.iterdir())]
    a = np.asarray(Image.open(got[0]), np.float32)
    b = np.asarray(Image.open(sorted(face.iterdir())[0]), np.float32)
    assert a.shape == b.shape == (64, 64, 3) and np.abs(a - b).mean() < 8
    src_csv = (tiny_root / "digits" / "mnistm" / "train.csv").read_bytes()
    assert (out / "digits" / "mnistm" / "train.csv").read_bytes() == src_csv
    assert (out / "Classifier.pth").read_bytes() == src_csv  # beside the data, not in the pack folder
    got = sorted((out / "digits" / "mnistm" / "data").iterdir())
    assert len(got) == 40  # train split only
    for p in got:  # pixel for pixel
        src = np.asarray(Image.open(tiny_root / "digits" / "mnistm" / "data" / p.name).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(p)), src), p.name
    with pytest.raises(gpu_pack.UserError, match="--quality must be 0"):
        gpu_pack.pack("digits", tiny_root, tmp_path / "bad", quality=101)
    with pytest.raises(gpu_pack.UserError, match="parts are numbered 0..1"):
        gpu_pack.pack("digits", tiny_root, tmp_path / "bad", part=(2, 2))


def test_bundle_respects_file_and_size_limits(tmp_path):
    runs = tmp_path / "runs"
    for m in "AB":
        (runs / f"p1_{m}" / "snapshots").mkdir(parents=True)
        (runs / f"p1_{m}" / "metrics.jsonl").write_text("{}\n")
        for s in range(5):
            (runs / f"p1_{m}" / "snapshots" / f"step_{s:07d}.pt").write_bytes(os.urandom(3000))
    (runs / "p2_acgan").mkdir()
    (runs / "p2_acgan" / "model.pt").write_bytes(os.urandom(2000))
    tars = gpu_pack.bundle(runs, tmp_path / "out", max_files=3, max_bytes=20000)
    assert 1 <= len(tars) <= 3 and all(t.stat().st_size <= 20000 + 10240 for t in tars)
    n = gpu_pack.extract(tmp_path / "out", tmp_path / "back")
    back = tmp_path / "back"
    assert (back / "p1_A" / "metrics.jsonl").is_file() and (back / "p2_acgan" / "model.pt").is_file()
    # newest snapshots come first; what did not fit is named
    assert (back / "p1_B" / "snapshots" / "step_0000004.pt").is_file()
    left = (back / "left_out.txt").read_text().split()
    assert left and n == 1 + sum(1 for p in back.rglob("*") if p.is_file()) - 1


def _running(pid: int) -> bool:
    """pid is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_train_gpu_script_end_to_end_tiny(tiny_digits, tmp_path):
    root = tiny_digits
    make_face_folder(root / "face" / "train", 64, ext=".jpg")
    env = {**os.environ, "GPU_TINY": "1", "GPU_RUNS": str(tmp_path / "runs"), "GPU_DATA": str(tmp_path / "gd"),
           "GPU_CARRY": str(tmp_path / "carry"), "GPU_TRAIN_SECONDS": "300", "GPU_GRACE_SECONDS": "5",
           "HW2_CLASSIFIER": str(root / "digits" / "mnistm" / "val.csv"), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    sh = ["bash", str(REPO / "scripts" / "train_gpu.sh")]
    calls = (["pack", str(root)], ["start", "digits"], ["unpack", "faces_0"], ["start", "faces"],
             ["collect", str(tmp_path / "out")])
    for args in calls:
        if args[0] == "collect":
            watchdog = int((tmp_path / "runs" / "watchdog.pid").read_text())
            assert _running(watchdog)
        r = subprocess.run(sh + args, env=env, capture_output=True, text=True, errors="replace", timeout=600)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    # collect stopped the watchdog (it used to linger until the 300 s deadline)
    time.sleep(0.5)
    assert not (tmp_path / "runs" / "watchdog.pid").exists() and not _running(watchdog)
    tars = sorted((tmp_path / "out").glob("bundle_*.tar"))
    assert 1 <= len(tars) <= 8
    gpu_pack.extract(tmp_path / "out", tmp_path / "back")
    back = tmp_path / "back"
    # both face parts were unpacked: all 64 faces trained (limit 64)
    assert len(list((tmp_path / "gd" / "face" / "train").iterdir())) == 64
    for m in ("A", "B", "B2"):
        snaps = sorted((back / f"p1_{m}" / "snapshots").glob("step_*.pt"))
        assert [p.name for p in snaps] == ["step_0000002.pt", "step_0000004.pt"], m
        ck = torch.load(snaps[-1], weights_only=True)
        assert ck["step"] == 4 and ck["config"]["method"] == m[0]
    assert torch.load(back / "p1_B2" / "snapshots" / "step_0000004.pt", weights_only=True)["config"]["d_arch"] == "dcgan"
    for m in ("diffusion", "acgan", "sagan"):
        ck = torch.load(back / f"p2_{m}" / "model.pt", weights_only=True)
        assert ck["step"] == 4, m
        assert (back / f"p2_{m}.log").is_file()
    # the shipped forms load in the entry scripts' code paths
    from p1_gan.inference import main as p1_main
    assert p1_main([str(tmp_path / "faces_out"), "--checkpoint", str(snaps[-1])]) == 0
    assert len(list((tmp_path / "faces_out").glob("*.png"))) == 1000

    # the next session: every GAN run's final snapshot (G + D) is carried back and the jobs go on from it
    packs = gpu_pack.pack_init(back, tmp_path / "carry2", max_mib=1.0, min_gap=float("-inf"))  # 4 steps: any D
    names = sorted(p.stem for d in packs for p in d.glob("*.pt"))
    assert names == sorted(gpu_pack.INIT_RUNS + ("p2_diffusion",))
    env2 = {**env, "GPU_RUNS": str(tmp_path / "runs2"), "GPU_CARRY": str(tmp_path / "carry2")}
    for args in [["unpack"] + [d.name for d in packs], ["start", "faces"], ["start", "digits"],
                 ["collect", str(tmp_path / "out2")]]:
        r = subprocess.run(sh + args, env=env2, capture_output=True, text=True, errors="replace", timeout=600)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    for name in gpu_pack.INIT_RUNS:
        log = (tmp_path / "runs2" / f"{name}.log").read_text(errors="replace")
        assert f"initialised G and D from {tmp_path / 'runs2' / 'init' / name}.pt (its step 4" in log, name
    log = (tmp_path / "runs2" / "p2_diffusion.log").read_text(errors="replace")
    assert f"initialised from {tmp_path / 'runs2' / 'init' / 'p2_diffusion.pt'} (its step 4" in log


def test_bundle_total_cap_and_skip_bring_back_everything_in_two_calls(tmp_path):
    runs = tmp_path / "runs"
    (runs / "p1_B" / "snapshots").mkdir(parents=True)
    for s in range(6):
        (runs / "p1_B" / "snapshots" / f"step_{s:07d}.pt").write_bytes(os.urandom(5000))
    first = gpu_pack.bundle(runs, tmp_path / "o1", max_files=8, max_bytes=14000, max_total=25000)
    assert sum(t.stat().st_size for t in first) <= 25000 + 8 * 10240
    gpu_pack.extract(tmp_path / "o1", tmp_path / "back")
    left = (tmp_path / "back" / "left_out.txt").read_text().split()
    got1 = sorted(p.name for p in (tmp_path / "back" / "p1_B" / "snapshots").iterdir())
    assert left and len(got1) + len(left) == 6
    gpu_pack.bundle(runs, tmp_path / "o2", skip=len(got1))
    gpu_pack.extract(tmp_path / "o2", tmp_path / "back")
    assert len(list((tmp_path / "back" / "p1_B" / "snapshots").iterdir())) == 6


def test_pack_init_leaves_out_runs_whose_d_is_at_chance(tmp_path, capsys):
    import json
    runs = tmp_path / "runs"
    for name, gap in (("p1_A", 4.0), ("p1_B2", 0.01)):
        (runs / name / "snapshots").mkdir(parents=True)
        (runs / name / "metrics.jsonl").write_text("".join(
            json.dumps({"kind": "train", "step": s, "d_real": gap / 2, "d_fake": -gap / 2}) + "\n" for s in range(12)))
        for step, has_d in ((1, True), (2, False)):  # the newest snapshot WITH D is the one carried
            snap = runs / name / "snapshots" / f"step_{step:07d}.pt"
            snap.write_bytes(os.urandom(1000 * step))
            snap.with_suffix(".json").write_text(json.dumps({"has_D": has_d}))
    packs = gpu_pack.pack_init(runs, tmp_path / "carry")
    assert [p.name for p in packs[0].iterdir()] == ["p1_A.pt"]
    assert (packs[0] / "p1_A.pt").stat().st_size == 1000
    assert "p1_B2: left out, its D is at chance" in capsys.readouterr().out
    assert gpu_pack.d_gap(runs / "p1_B2" / "metrics.jsonl") == pytest.approx(0.01)


def test_face_methods_picks_the_face_jobs_and_init_pack_may_come_first(tmp_path):
    """A short lease: the init pack is unpacked before any data (into a data folder that does not
    exist yet), and FACE_METHODS=B gives the GPU to B alone; an unknown method is named."""
    face = make_face_folder(tmp_path / "src" / "face" / "train", 32, ext=".jpg")
    gpu_pack.pack("faces", face.parents[1], tmp_path / "carry" / "faces_0", workers=1)
    (tmp_path / "carry" / "init_0").mkdir()
    (tmp_path / "carry" / "init_0" / "p1_B.pt").write_bytes(b"weights")
    env = {**os.environ, "GPU_TINY": "1", "GPU_RUNS": str(tmp_path / "runs"),
           "GPU_DATA": str(tmp_path / "not_yet" / "gd"), "GPU_CARRY": str(tmp_path / "carry"),
           "GPU_TRAIN_SECONDS": "300", "GPU_GRACE_SECONDS": "5", "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "FACE_METHODS": "B", "P1B_ARGS": ""}  # no --init-from the dummy file
    sh = ["bash", str(REPO / "scripts" / "train_gpu.sh")]
    for args in (["unpack", "init_0"], ["start", "faces"], ["collect", str(tmp_path / "out")]):
        r = subprocess.run(sh + args, env=env, capture_output=True, text=True, errors="replace", timeout=600)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    assert (tmp_path / "runs" / "init" / "p1_B.pt").read_bytes() == b"weights"
    assert [line.split()[1] for line in (tmp_path / "runs" / "pids").read_text().splitlines()] == ["p1_B"]
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.log")) == ["p1_B.log", "watchdog.log"]
    assert sorted(p.name for p in (tmp_path / "runs" / "p1_B" / "snapshots").glob("*.pt"))[-1] == "step_0000004.pt"
    r = subprocess.run(sh + ["start", "faces"], env={**env, "GPU_RUNS": str(tmp_path / "runs2"), "FACE_METHODS": "A C"},
                       capture_output=True, text=True, errors="replace", timeout=600)
    assert r.returncode == 2 and "unknown face method C in FACE_METHODS" in r.stderr
    assert not (tmp_path / "runs2" / "p1_A.log").exists()  # refused before A was launched


def test_digit_models_picks_the_digit_jobs(tiny_digits, tmp_path):
    """DIGIT_MODELS=diffusion gives the digit share of a lease to the diffusion model alone; the
    parts of a split digits pack may be unpacked in earlier calls; an unknown model is named."""
    for i in range(2):
        gpu_pack.pack("digits", tiny_digits, tmp_path / "carry" / f"digits_{i}", workers=1, part=(i, 2))
    env = {**os.environ, "GPU_TINY": "1", "GPU_RUNS": str(tmp_path / "runs"), "GPU_DATA": str(tmp_path / "gd"),
           "GPU_CARRY": str(tmp_path / "carry"), "GPU_TRAIN_SECONDS": "300", "GPU_GRACE_SECONDS": "5",
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "DIGIT_MODELS": "diffusion"}
    sh = ["bash", str(REPO / "scripts" / "train_gpu.sh")]
    r = subprocess.run(sh + ["start", "digits"], env={**env, "GPU_RUNS": str(tmp_path / "runs0"),
                       "DIGIT_MODELS": "diffusion gan"}, capture_output=True, text=True, errors="replace", timeout=600)
    assert r.returncode == 2 and "unknown digit model gan in DIGIT_MODELS" in r.stderr
    assert not (tmp_path / "runs0" / "p2_diffusion.log").exists()  # refused before anything was launched
    r = subprocess.run(sh + ["unpack", "digits_0"], env=env, capture_output=True, text=True, errors="replace", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(sh + ["start", "digits"], env={**env, "GPU_CARRY": str(tmp_path / "nothing")},
                       capture_output=True, text=True, errors="replace", timeout=600)  # digits_1 not carried
    assert r.returncode == 2 and "only 20 of 40 mnistm train images are unpacked" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs" / "end_at").exists()  # the next start sets the deadline afresh
    shutil.rmtree(tmp_path / "carry" / "digits_0")  # that call's pack does not travel again
    for args in (["start", "digits"], ["collect", str(tmp_path / "out")]):
        r = subprocess.run(sh + args, env=env, capture_output=True, text=True, errors="replace", timeout=600)
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    assert len(list((tmp_path / "gd" / "digits" / "mnistm" / "data").iterdir())) == 40
    assert [line.split()[1] for line in (tmp_path / "runs" / "pids").read_text().splitlines()] == ["p2_diffusion"]
    assert torch.load(tmp_path / "runs" / "p2_diffusion" / "model.pt", weights_only=True)["step"] == 4
