"""Problem 1: model shapes, the reference layer list, train.py (A and B, resume, FID hook), export and
hw2_1.sh end to end on a tiny checkpoint trained here. Tiny widths keep it fast on a 2-core CPU."""
import hashlib
import importlib.util
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from common.errors import UserError
from common.training import load_checkpoint, read_jsonl
from p1_gan import export, inference, train
from p1_gan.config import build_models, method_defaults
from p1_gan.model import Discriminator, Generator, SNDiscriminator

REPO = Path(__file__).resolve().parents[1]
TINY = ["--ngf", "4", "--ndf", "4", "--batch-size", "8", "--log-every", "1", "--eval-every", "0",
        "--sample-every", "2", "--no-progress", "--ema-bn-stats", "false"]


def test_shapes_and_ranges():
    G = Generator(z_dim=100, ngf=8)
    x = G(torch.randn(3, 100))
    assert x.shape == (3, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    for D in (Discriminator(8), SNDiscriminator(8), SNDiscriminator(8, extra=True)):
        out = D(x)
        assert out.shape == (3,) and torch.isfinite(out).all()


def test_reference_dcgan_layers():
    """Method A at full width is report 000's layer list (Sigmoid folded into the loss)."""
    convt = [m for m in Generator().main if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.stride[0], m.padding[0]) for m in convt] == \
        [(100, 512, 1, 0), (512, 256, 2, 1), (256, 128, 2, 1), (128, 64, 2, 1), (64, 3, 2, 1)]
    kinds = [type(m).__name__ for m in Generator().main]
    assert kinds == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 4 + ["ConvTranspose2d", "Tanh"]
    d = list(Discriminator().main)
    convs = [m for m in d if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert [m.num_features for m in d if isinstance(m, nn.BatchNorm2d)] == [128, 256, 512]
    assert {m.negative_slope for m in d if isinstance(m, nn.LeakyReLU)} == {0.2}
    G, D = build_models(method_defaults("A"))
    assert type(D) is Discriminator and sum(p.numel() for p in G.parameters()) == 3_576_704
    assert "Generator(" in repr(G) and "ConvTranspose2d(100, 512" in repr(G)


def run_train(tmp_path, data, method, *extra):
    run = tmp_path / f"run_{method}"
    train.main(["--method", method, "--data", str(data), "--run-dir", str(run), "--cache-dir", str(tmp_path / "cache"),
                *TINY, *extra])
    return run


@pytest.mark.parametrize("method", ["A", "B"])
def test_train_steps_finite_and_resume(tiny_faces, tmp_path, method, capsys):
    data = tiny_faces / "face"
    run = run_train(tmp_path, data, method, "--max-steps", "2")
    assert load_checkpoint(run / "last.pt")["step"] == 2
    # rerun the same command with a larger budget (and without the width flags: the saved config wins),
    # on one CPU thread (two jobs side by side on a 2-core CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train.main(["--method", method, "--data", str(data), "--run-dir", str(run), "--max-steps", "4",
                    "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert "from step 2" in capsys.readouterr().out
    assert [p.name[:9] for p in (tmp_path / "cache").iterdir()] == ["faces_32_"]  # decoded once, cached
    recs = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all(math.isfinite(r[k]) for r in recs for k in ("loss_D", "loss_G"))
    assert len({round(r["loss_G"], 6) for r in recs}) == 4  # losses change
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["method"], cfg["ngf"], cfg["max_steps"]) == (method, 4, 4)
    assert cfg["loss"] == ("bce" if method == "A" else "hinge")
    ck = load_checkpoint(run / "last.pt")
    assert ck["step"] == 4 and (ck["ema"] is None) == (method == "A")
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    with pytest.raises(UserError, match="threads must be >= 0 .*got -1"):
        train.main(["--method", method, "--data", str(data), "--run-dir", str(tmp_path / "r2"), "--threads", "-1"])
    with pytest.raises(UserError, match="holds a method"):
        train.main(["--method", "B" if method == "A" else "A", "--data", str(data), "--run-dir", str(run)])


def test_fid_hook_keeps_best(tiny_faces, tmp_path, monkeypatch):
    import common.fid

    scores = iter([5.0, 3.0, 4.0])
    seen = []

    def fake_fid(x, ref, device=None, **kw):
        seen.append((tuple(x.shape), Path(ref).name))
        return next(scores)
    monkeypatch.setattr(common.fid, "fid_of_images", fake_fid)
    run = run_train(tmp_path, tiny_faces / "face", "B", "--max-steps", "3", "--eval-every", "1", "--fid-n", "10",
                    "--batch-size", "4", "--sample-every", "0")
    assert seen == [((10, 3, 64, 64), "val")] * 3
    assert [r["fid"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "eval"] == [5.0, 3.0, 4.0]
    assert load_checkpoint(run / "best.pt")["best"] == {"step": 2, "fid": 3.0}


def test_train_errors(tmp_path):
    with pytest.raises(UserError, match="training folder not found: .*nope/face/train"):
        train.main(["--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")])
    with pytest.raises(UserError, match="unknown method 'C'"):
        train.main(["--method", "C", "--run-dir", str(tmp_path / "r")])


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_hw2_1_end_to_end(tiny_faces, tmp_path):
    run = run_train(tmp_path, tiny_faces / "face", "B", "--max-steps", "1", "--ema-bn-stats", "true")
    ema_bn = load_checkpoint(run / "last.pt")["ema"]["module"]["main.1.num_batches_tracked"]
    assert ema_bn.item() == 4  # standing statistics: 256 images in batches of 64
    ck = tmp_path / "p1_methodB.pt"
    export.main([str(run / "last.pt"), str(ck)])
    assert json.loads(ck.with_suffix(".json").read_text())["step"] == 1
    out1, out2 = tmp_path / "out1" / "nested", tmp_path / "out2"
    r = subprocess.run(["bash", str(REPO / "hw2_1.sh"), str(out1), "--checkpoint", str(ck)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    files = sorted(out1.iterdir())
    assert len(files) == 1000 and files[0].name == "0000.png" and files[-1].name == "0999.png"
    for f in files[::97]:
        with Image.open(f) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    inference.main([str(out2), "--checkpoint", str(ck)])  # the same code path, in-process (faster)
    assert _digest(out1) == _digest(out2)  # same bytes on every run
    with pytest.raises(UserError, match=f"{ck} holds a method B generator, not A"):
        inference.main([str(tmp_path / "o3"), "--method", "A", "--checkpoint", str(ck)])

    # report figures from the same run: grids from the folder and from the checkpoint agree
    figs = tmp_path / "figs"
    p1_figures().main(["--out", str(figs), "--images-B", str(out1), "--checkpoint-A", str(tmp_path / "none.pt"),
                       "--run-A", str(tmp_path / "none"), "--run-B", str(run)])
    assert sorted(p.name for p in figs.iterdir()) == ["curves_B.png", "first32_B.png", "models.txt"]
    with Image.open(figs / "first32_B.png") as im:
        assert im.size == (8 * 66 + 2, 4 * 66 + 2)  # 4 x 8 grid of 64x64, padding 2
    p1_figures().main(["--out", str(tmp_path / "figs2"), "--checkpoint-B", str(ck), "--run-B", str(run)])
    a = np.asarray(Image.open(figs / "first32_B.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "figs2" / "first32_B.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 1
    assert "SNDiscriminator(" in (figs / "models.txt").read_text()


def test_best_of_k_by_discriminator(tiny_faces, tmp_path):
    from common.checkpoint import export_state
    from common.gan import generate
    run = run_train(tmp_path, tiny_faces / "face", "B", "--max-steps", "2")
    ck = load_checkpoint(run / "last.pt")
    with_d, no_d = tmp_path / "with_d.pt", tmp_path / "no_d.pt"
    export_state(ck, with_d, include_d=True)
    export_state(ck, no_d)
    G, D, cfg, saved = inference.load_models(with_d)
    assert D is not None and "candidates" not in saved and inference.load_models(no_d)[1] is None

    # each image is, of its K candidate noises, the one D scores highest
    x, pick = inference.generate_best_of(G, D, 40, cfg.z_dim, k=3, seed=5, batch_size=7)
    cands = torch.stack([generate(G, 40, cfg.z_dim, seed=inference.candidate_seed(5, j)) for j in range(3)])
    scores = torch.stack([inference.realness(D, c) for c in cands])
    assert torch.equal(pick, scores.argmax(0)) and len(set(pick.tolist())) > 1  # not always the same candidate
    assert torch.allclose(x, cands[pick, torch.arange(40)])
    assert torch.equal(cands[0], generate(G, 40, cfg.z_dim, seed=5))  # candidate 0 = the plain draw
    assert (inference.realness(D, x) >= scores[0] - 1e-6).all()  # never worse than the plain image (by D)
    x1, pick1 = inference.generate_best_of(G, None, 40, cfg.z_dim, k=1, seed=5)
    assert torch.equal(x1, cands[0]) and not pick1.any()

    # CLI: --candidates 1 is the plain G; the config's candidates is the default; errors name the problem
    inference.main([str(tmp_path / "plain"), "--checkpoint", str(no_d), "--n", "20"])
    inference.main([str(tmp_path / "k1"), "--checkpoint", str(with_d), "--n", "20", "--candidates", "1"])
    inference.main([str(tmp_path / "k3"), "--checkpoint", str(with_d), "--n", "20", "--candidates", "3"])
    assert _digest(tmp_path / "plain") == _digest(tmp_path / "k1") != _digest(tmp_path / "k3")
    ck3 = load_checkpoint(with_d)
    ck3["config"]["candidates"] = 3
    torch.save(ck3, tmp_path / "k3cfg.pt")
    inference.main([str(tmp_path / "k3cfg"), "--checkpoint", str(tmp_path / "k3cfg.pt"), "--n", "20"])
    assert _digest(tmp_path / "k3cfg") == _digest(tmp_path / "k3")
    with pytest.raises(UserError, match=f"{no_d} keeps no discriminator"):
        inference.main([str(tmp_path / "x"), "--checkpoint", str(no_d), "--candidates", "2"])
    with pytest.raises(UserError, match="--candidates must be at least 1, got 0"):
        inference.main([str(tmp_path / "x"), "--checkpoint", str(with_d), "--candidates", "0"])


def p1_figures():
    spec = importlib.util.spec_from_file_location("p1_figures", REPO / "scripts" / "p1_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_missing_checkpoint_says_how_to_train(tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "default_checkpoint", lambda m: tmp_path / f"p1_method{m}.pt")
    with pytest.raises(UserError, match=r"no trained method A weights .* python -m p1_gan.train --method A"):
        inference.main([str(tmp_path / "out"), "--method", "A"])
    with pytest.raises(UserError, match="checkpoint not found"):
        inference.main([str(tmp_path / "out"), "--checkpoint", str(tmp_path / "x.pt")])


@pytest.mark.slow
def test_bench_p1_times_best_of_k(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_p1", REPO / "scripts" / "bench_p1.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--methods", "B", "--widths", "4", "--batch-size", "4", "--steps", "1", "--warmup", "1",
                       "--candidates", "1", "3", "--device", "cpu", "--out", str(tmp_path / "b.json")]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("| B | 4 | 4 | "))
    assert re.search(r"\| K 1: \d+\.\d+, K 3: \d+\.\d+ \|$", row), row
    info = json.loads((tmp_path / "b.json").read_text())
    assert set(info["rows"][0]["best_of_s"]) == {"1", "3"}


def test_two_fresh_runs_are_identical(tiny_faces, tmp_path):
    """The initial weights come from --seed too: the same command twice gives the same weights."""
    a = run_train(tmp_path / "a", tiny_faces / "face", "B", "--max-steps", "1")
    b = run_train(tmp_path / "b", tiny_faces / "face", "B", "--max-steps", "1")
    ga, gb = load_checkpoint(a / "last.pt")["G"], load_checkpoint(b / "last.pt")["G"]
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    c = run_train(tmp_path / "c", tiny_faces / "face", "B", "--max-steps", "1", "--seed", "5")
    assert not all(torch.equal(ga[k], v) for k, v in load_checkpoint(c / "last.pt")["G"].items())


def test_interrupted_run_resumes_exactly(tiny_faces, tmp_path):
    """2 steps, stop, resume to 4 == 4 steps straight (batches keep their place in the epoch; noise,
    DiffAugment and the optimisers carry over)."""
    a = run_train(tmp_path / "a", tiny_faces / "face", "B", "--max-steps", "4", "--save-every", "0")
    run_train(tmp_path / "b", tiny_faces / "face", "B", "--max-steps", "2", "--save-every", "0")
    b = run_train(tmp_path / "b", tiny_faces / "face", "B", "--max-steps", "4", "--save-every", "0")
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["step"] == cb["step"] == 4
    for key in ("G", "D"):
        assert all(torch.equal(ca[key][k], cb[key][k]) for k in ca[key]), key
