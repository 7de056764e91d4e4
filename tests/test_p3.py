"""Problem 3 (domain adaptation): gradient reversal, schedules, shapes, every training mode on tiny
synthetic domains, resume, hw2_3.sh end to end and its bad inputs."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserError, cli_main
from common.training import read_jsonl
from p3_dann import inference
from p3_dann.adapt import Augment, dann_lambda, dann_lr, pseudo_label_loss
from p3_dann.config import Config
from p3_dann.evaluate import load_model
from p3_dann.model import DANN, grad_reverse
from p3_dann.train import train
from tests.conftest import DATA, REPO, needs_data

STEPS = 40
TINY = dict(width=8, batch_size=16, log_every=1, eval_every=1000, cache_dir="", save_every_min=1e9,
            eval_source_max=20, threads=0)


def tiny_cfg(root: Path, **kw) -> Config:
    return Config(data_root=str(root), **{**TINY, **kw})


# ----------------------------------------------------------------------------- building blocks
def test_grad_reverse_returns_minus_lambda_grad():
    x = torch.randn(5, 7, requires_grad=True)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)  # identity forward
    g = torch.randn(5, 7)
    y.backward(g)
    assert torch.allclose(x.grad, -0.3 * g)


def test_lambda_and_lr_schedules():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    vals = [dann_lambda(p / 10) for p in range(11)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    assert dann_lr(0.0) == 1.0 and dann_lr(1.0) == pytest.approx(11 ** -0.75)


def test_model_shapes_and_domain_gradient():
    m = DANN(width=8).eval()
    x = torch.rand(4, 3, 28, 28) * 2 - 1
    f = m.features(x)
    assert f.shape == (4, 32) and m(x).shape == (4, 10)
    # the domain loss's gradient reaches the features reversed
    f = f.detach().requires_grad_(True)
    m.domain_logits(f, 1.0).sum().backward()
    g_rev = f.grad.clone()
    f.grad = None
    m.domain(f).sum().backward()
    assert torch.allclose(g_rev, -f.grad)


def test_input_norm_removes_brightness_and_contrast():
    from p3_dann.model import InputNorm
    x = torch.rand(3, 3, 28, 28) - 0.5
    out = InputNorm()(x)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2, 3)), torch.ones(3), atol=1e-2)
    assert torch.allclose(InputNorm()(0.5 * x + 0.2), out, atol=1e-2)  # up to the eps in the std
    assert InputNorm("none")(x) is x


def test_augment_shapes_ranges_and_determinism():
    x = torch.rand(6, 3, 28, 28) * 2 - 1
    assert Augment("none")(x) is x
    for s in ("weak", "strong"):
        a = Augment(s)(x, torch.Generator().manual_seed(1))
        b = Augment(s)(x, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b)
        assert not torch.allclose(a, x) and a.min() >= -1.001 and a.max() <= 1.001
    with pytest.raises(ValueError):
        Augment("medium")


def test_pseudo_label_loss_masks_unconfident_samples():
    teacher = torch.tensor([[10.0, 0, 0], [0.1, 0, 0]])  # confident on sample 0 only
    student = torch.tensor([[0.0, 0, 0], [0.0, 5, 0]])
    loss, frac = pseudo_label_loss(student, teacher, threshold=0.9)
    assert frac.item() == 0.5
    assert loss.item() == pytest.approx(math.log(3) / 2, rel=1e-5)  # CE of uniform logits, half the batch


# ----------------------------------------------------------------------------- training loop
@pytest.mark.parametrize("mode", ["source", "target", "dann", "improved"])
def test_each_mode_lowers_the_loss(tiny_digits, tmp_path, mode):
    torch.manual_seed(0)
    cfg = tiny_cfg(tiny_digits, mode=mode, max_steps=STEPS, augment_source="none", augment_target="none",
                   augment_student="weak", threshold=0.5, lr=3e-3,
                   domain_weight=0.3)
    s = train(cfg, tmp_path / "run", progress=False)
    rec = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(rec) == STEPS and s["step"] == STEPS
    first, last = np.mean([r["cls"] for r in rec[:5]]), np.mean([r["cls"] for r in rec[-5:]])
    assert last < 0.75 * first, (first, last)
    if mode in ("dann", "improved"):
        assert all(0 <= r["domain_acc"] <= 1 and r["domain"] > 0 for r in rec)
        assert rec[-1]["lambd"] > rec[0]["lambd"]
    if mode == "improved":
        assert any(r["confident"] > 0 for r in rec) and all(r["pseudo"] >= 0 for r in rec)
    summary = json.loads((tmp_path / "run" / "final.json").read_text())
    assert 0 <= summary["target_val_acc"] <= 1 and summary["mode"] == mode
    model, c = load_model(tmp_path / "run" / "final.pt")
    assert c == cfg and model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("source,target", [("mnistm", "svhn"), ("svhn", "mnistm"), ("usps", "svhn")])
def test_svhn_scenarios_run(tiny_digits, tmp_path, source, target):
    cfg = tiny_cfg(tiny_digits, source=source, target=target, mode="improved", max_steps=3)
    s = train(cfg, tmp_path / "run", export=str(tmp_path / "ck.pt"), progress=False)
    assert s["scenario"] == f"{source}->{target}"
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "ck.json").read_text())["mode"] == "improved"


def test_resume_continues_and_config_mismatch_is_an_error(tiny_digits, tmp_path):
    cfg = tiny_cfg(tiny_digits, mode="dann", max_steps=6)
    assert train(cfg, tmp_path / "run", stop_after=4, progress=False) == {"step": 4, "finished": False}
    s = train(cfg, tmp_path / "run", progress=False)
    assert s["step"] == 6
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(UserError, match="different config"):
        train(dataclasses.replace(cfg, lr=0.5), tmp_path / "run", progress=False)


def test_bad_training_arguments(tiny_digits, tmp_path):
    from p3_dann.train import main
    with pytest.raises(UserError, match="unknown target domain 'mnist'"):
        main(["--target", "mnist", "--data", str(tiny_digits), "--run-dir", str(tmp_path / "r")])
    with pytest.raises(UserError, match="unknown mode"):
        main(["--mode", "best"])
    with pytest.raises(UserError, match="digit domain folder not found"):
        main(["--dry-run", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "r2")])


# ----------------------------------------------------------------------------- inference / hw2_3.sh
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 'target'-mode model trained for 30 steps on tiny synthetic usps (shared by the module)."""
    from tests.conftest import make_digit_domain
    root = tmp_path_factory.mktemp("ck") / "hw2_data"
    make_digit_domain(root, "mnistm", seed=1)
    make_digit_domain(root, "usps", channels=1, seed=2)
    cfg = tiny_cfg(root, mode="target", max_steps=30, log_every=100, lr=3e-3, augment_source="none")
    train(cfg, root.parent / "ckrun", export=str(root.parent / "tiny.pt"), progress=False)
    return root.parent / "tiny.pt"


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_hw2_3_end_to_end(tiny_digits, tiny_checkpoint, tmp_path):
    test_dir = tiny_digits / "digits" / "usps" / "data"
    out = tmp_path / "new" / "sub" / "pred.csv"
    r = subprocess.run(["bash", str(REPO / "hw2_3.sh"), str(test_dir), str(out), "--checkpoint", str(tiny_checkpoint)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert rows[0] == ["image_name", "label"]
    names = sorted(p.name for p in test_dir.iterdir())
    assert [r[0] for r in rows[1:]] == names and all(0 <= int(r[1]) <= 9 for r in rows[1:])
    # the tiny model learnt the synthetic classes: predictions agree with the labels on its train images
    truth = dict(read_rows(tiny_digits / "digits" / "usps" / "train.csv")[1:])
    acc = np.mean([truth[n] == lab for n, lab in rows[1:] if n in truth])
    assert acc > 0.5, acc


def run_cli(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli_main(inference.main, argv)
    return e.value.code, capsys.readouterr().err


def test_mixed_folder_is_handled(tiny_checkpoint, tmp_path, capsys):
    d = tmp_path / "my_usps_test"
    d.mkdir()
    Image.fromarray(np.full((16, 16), 200, np.uint8), "L").save(d / "b.png")            # grayscale, 16x16
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(d / "a.jpg")                 # RGB, other size
    Image.fromarray(np.zeros((28, 28, 4), np.uint8), "RGBA").save(d / "c.png")         # RGBA
    (d / "notes.txt").write_text("hi")
    (d / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "o" / "p.csv"
    code, err = run_cli(capsys, [str(d), str(out), "--checkpoint", str(tiny_checkpoint)])
    assert code == 0
    assert "skipped 1 non-image file(s)" in err and "skipped 1 unreadable image(s)" in err
    assert [r[0] for r in read_rows(out)[1:]] == ["a.jpg", "b.png", "c.png"]


@pytest.mark.parametrize("case,message", [
    ("missing", "test folder not found"),
    ("empty", "no readable images"),
    ("unknown_target", "unknown target domain 'mnist'"),
    ("no_domain_in_path", "cannot tell the target domain"),
    ("missing_checkpoint", "checkpoint not found"),
    ("not_a_checkpoint", "cannot read checkpoint"),
])
def test_bad_inference_inputs_are_one_line_errors(tiny_digits, tmp_path, capsys, case, message):
    usps = tiny_digits / "digits" / "usps" / "data"
    ck = tmp_path / "none.pt"
    args = {"missing": [str(tmp_path / "usps_nope"), "o.csv", "--checkpoint", str(ck)],
            "empty": [str(tmp_path / "empty_usps"), "o.csv", "--checkpoint", str(ck)],
            "unknown_target": [str(usps), "o.csv", "mnist"],
            "no_domain_in_path": [str(tmp_path / "plain"), "o.csv"],
            "missing_checkpoint": [str(usps), "o.csv", "--checkpoint", str(ck)],
            "not_a_checkpoint": [str(usps), "o.csv", "--checkpoint", str(tmp_path / "bad.pt")]}[case]
    (tmp_path / "empty_usps").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"junk")
    if case in ("missing", "empty"):  # the folder is checked after the checkpoint: give a real one
        from p3_dann.train import export_model
        m = DANN(width=8)
        export_model(dataclasses.asdict(tiny_cfg(tiny_digits)), m.state_dict(), 0, {}, {"mode": "target"}, ck)
        capsys.readouterr()
    if case == "no_domain_in_path" and any(d in str(tmp_path).lower() for d in ("usps", "svhn", "mnistm")):
        pytest.skip("tmp path names a domain")
    code, err = run_cli(capsys, args)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_target_without_shipped_checkpoint_explains_how_to_train(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inference, "CHECKPOINT_DIR", tmp_path / "checkpoints")  # a checkout without checkpoints/
    (tmp_path / "svhn_test").mkdir()
    code, err = run_cli(capsys, [str(tmp_path / "svhn_test"), "o.csv"])
    assert code == 2 and "no checkpoint for target svhn" in err and "--mode improved" in err


def test_target_from_path_and_argument():
    assert inference.infer_target("/data/hw2_data/digits/usps/data", None) == "usps"
    assert inference.infer_target("/x/svhn_run/mnistm/test", None) == "mnistm"  # the last one named
    assert inference.infer_target("/x/anything", "SVHN") == "svhn"


SHIPPED = REPO / "checkpoints" / "p3_mnistm_usps_improved.pt"


@needs_data("digits", "usps", "val.csv")
@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped checkpoint")
def test_shipped_checkpoint_on_real_usps(tmp_path):
    labels = [int(r[1]) for r in read_rows(DATA / "digits" / "usps" / "val.csv")[1:301]]
    model, cfg = load_model(SHIPPED)
    assert (cfg.source, cfg.target) == ("mnistm", "usps")
    from common.data import ImageFolder
    sub = ImageFolder(DATA / "digits" / "usps" / "data", DATA / "digits" / "usps" / "val.csv")
    xs = torch.stack([sub[i][0] for i in range(300)])
    pred = model(xs).argmax(1)
    assert (pred == torch.tensor(labels)).float().mean() > 0.9


# ----------------------------------------------------------------------------- report scripts
def load_script(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_table_tsne_and_bench_scripts(tiny_digits, tmp_path, capsys):
    cks = tmp_path / "cks"
    for mode in ("source", "improved"):
        cfg = tiny_cfg(tiny_digits, mode=mode, max_steps=3, eval_every=100)
        train(cfg, tmp_path / mode, export=str(cks / f"p3_mnistm_usps_{mode}.pt"), progress=False)
    table = load_script("p3_table")
    out = tmp_path / "rep" / "acc.md"
    assert table.main(["--data", str(tiny_digits), "--checkpoints", str(cks), "--out", str(out),
                       "--cache-dir", ""]) == 0
    md = out.read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| ") and "method" not in line}
    res = {r["mode"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    # column 2 is mnistm -> usps; the value is the one evaluated here; other cells are empty
    assert rows["DANN"] == ["-"] * 4 and rows["Trained on source (lower bound)"][0] == "-"
    assert rows["Trained on source (lower bound)"][1] == f"{100 * res['source']['target_val_acc']:.2f} %"
    tsne = load_script("p3_tsne")
    assert tsne.main(["--data", str(tiny_digits), "--checkpoints", str(cks), "--out", str(tmp_path / "rep"),
                      "--n", "20", "--modes", "improved", "--cache-dir", ""]) == 0
    png = tmp_path / "rep" / "tsne_mnistm_usps_improved.png"
    assert Image.open(png).size[0] > 400
    bench = load_script("bench_p3")
    assert bench.main(["--steps", "1", "--modes", "source", "improved", "--n-infer", "256",
                       "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert [r["mode"] for r in b["train"]] == ["source", "improved"] and b["inference_img_per_s"] > 0


def test_cli_dry_run_on_svhn_layout(tiny_digits, tmp_path, capsys):
    from p3_dann.train import main
    run = tmp_path / "r"
    assert main(["--source", "svhn", "--target", "mnistm", "--mode", "dann", "--dry-run", "--no-progress",
                 "--data", str(tiny_digits), "--run-dir", str(run)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["scenario"] == "svhn->mnistm" and out["step"] == 3 and "--dry-run" in out["command"]
    assert json.loads((run / "config.json").read_text())["batch_size"] == 8


def test_second_stage_starts_from_init_weights(tiny_digits, tmp_path):
    first = train(tiny_cfg(tiny_digits, mode="improved", max_steps=3), tmp_path / "s1", progress=False)
    cfg = tiny_cfg(tiny_digits, mode="improved", max_steps=2, init_from=str(tmp_path / "s1" / "final.pt"), domain_weight=0.0,
                   lr=1e-12, weight_decay=0.0, augment_source="none")
    second = train(cfg, tmp_path / "s2", progress=False)
    assert second["train_time_total_s"] >= first["train_time_s"]
    m1, _ = load_model(tmp_path / "s1" / "final.pt")
    m2, _ = load_model(tmp_path / "s2" / "final.pt")
    w1, w2 = m1.classifier.net[-1].weight, m2.classifier.net[-1].weight
    assert torch.allclose(w1, w2, atol=1e-6)  # lr ~ 0: the teacher kept the first stage's weights
    with pytest.raises(UserError, match="width/input_norm differ"):
        train(dataclasses.replace(cfg, width=16), tmp_path / "s3", progress=False)


@pytest.mark.parametrize("mode", ["dann", "improved"])
def test_interrupted_run_resumes_exactly(tiny_digits, tmp_path, mode):
    """Stopped after 4 steps and resumed to 9 == 9 steps straight (both batch streams, the shared
    augmentation generator, the teacher and the optimiser carry over)."""
    cfg = tiny_cfg(tiny_digits, mode=mode, max_steps=9)
    train(cfg, tmp_path / "straight", progress=False)
    assert train(cfg, tmp_path / "cut", stop_after=4, progress=False)["step"] == 4
    train(cfg, tmp_path / "cut", progress=False)
    a, b = load_model(tmp_path / "straight" / "final.pt")[0], load_model(tmp_path / "cut" / "final.pt")[0]
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
