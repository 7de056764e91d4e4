"""``python -m common.evaluate``: --json output per metric, readable output, one-line errors."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from common import evaluate
from common.errors import cli_main
from tests.conftest import REPO, make_face_folder
from tests.test_metrics import astronaut_face_64


def run_json(capsys, *argv) -> dict:
    assert evaluate.main([*map(str, argv), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one line: one JSON object
    return json.loads(out)


def run_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli_main(evaluate.main, list(map(str, argv)))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "label")] + rows)
    return path


def test_uda_json_and_text(tmp_path, capsys):
    gt = _csv(tmp_path / "gt.csv", [("a.png", 1), ("b.png", 2), ("c.png", 3)])
    pred = _csv(tmp_path / "pred.csv", [("a.png", 1), ("b.png", 0), ("x.png", 3)])
    r = run_json(capsys, "uda", pred, gt)
    assert r["uda"] == pytest.approx(1 / 3) and r["missing_in_pred"] == ["c.png"] and r["extra_in_pred"] == ["x.png"]
    assert evaluate.main(["uda", str(pred), str(gt)]) == 0
    text = capsys.readouterr().out
    assert "33.33 %" in text and "c.png" in text and "x.png" in text


def test_face_json(tmp_path, capsys):
    Image.fromarray(astronaut_face_64()).save(tmp_path / "0.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "1.png")
    r = run_json(capsys, "face", tmp_path)
    assert r == {"face": 50.0, "n_one_face": 1, "n": 2, "unreadable": []}


def test_digits_json_with_a_given_classifier(tmp_path, capsys):
    from common.digit_classifier import LeNet
    model = LeNet()
    with torch.no_grad():  # a classifier that always says 7
        for p in model.parameters():
            p.zero_()
        model.fc3.bias[7] = 1.0
    torch.save({"state_dict": model.state_dict()}, tmp_path / "c.pth")
    gen = tmp_path / "gen"
    gen.mkdir()
    for name in ("7_001.png", "7_002.png", "3_001.png", "1_001.png"):
        Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(gen / name)
    r = run_json(capsys, "digits", gen, "--classifier", tmp_path / "c.pth")
    assert r["digits"] == 0.5 and r["per_digit"] == {"1": 0.0, "3": 0.0, "7": 1.0} and r["n"] == 4
    assert evaluate.main(["digits", str(gen), "--classifier", str(tmp_path / "c.pth")]) == 0
    assert "50.00 %" in capsys.readouterr().out
    (gen / "7_003.png").write_bytes(b"")  # a zero-byte file is left out and named, as the face score does
    r = run_json(capsys, "digits", gen, "--classifier", tmp_path / "c.pth")
    assert r["n"] == 4 and r["digits"] == 0.5 and r["unreadable"] == ["7_003.png"]
    assert evaluate.main(["digits", str(gen), "--classifier", str(tmp_path / "c.pth")]) == 0
    assert "unreadable (left out): 7_003.png" in capsys.readouterr().out


@pytest.mark.slow
def test_fid_json_of_a_folder_with_itself(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HW2_CACHE", str(tmp_path / "cache"))
    a = make_face_folder(tmp_path / "a", n=5, size=32)
    r = run_json(capsys, "fid", a, a, "--dims", "64", "--device", "cpu", "--batch-size", "5")
    assert abs(r["fid"]) < 1e-3 and r["n_gen"] == r["n_ref"] == 5
    assert evaluate.main(["fid", str(a), str(a), "--dims", "64", "--device", "cpu"]) == 0
    assert "note: only 5 images on one side: FID is biased" in capsys.readouterr().out


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, monkeypatch):
    assert "missing" in run_error(capsys, "fid", tmp_path / "missing", tmp_path)
    assert "missing" in run_error(capsys, "face", tmp_path / "missing")
    assert "missing" in run_error(capsys, "digits", tmp_path / "missing", "--classifier", tmp_path / "c.pth")
    pred = _csv(tmp_path / "p.csv", [("a.png", 1)])
    assert "gt.csv" in run_error(capsys, "uda", pred, tmp_path / "gt.csv")
    _csv(tmp_path / "bad.csv", [("a.png", 12)])
    assert "label 12" in run_error(capsys, "uda", pred, tmp_path / "bad.csv")
    assert "batch-size" in run_error(capsys, "fid", tmp_path, tmp_path, "--batch-size", "0")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    make_face_folder(tmp_path / "imgs", n=2, size=16)
    msg = run_error(capsys, "is", tmp_path / "imgs")
    assert "inception_v3_google-0cc3c7bd.pth" in msg and str(tmp_path / "hub") in msg


@pytest.mark.slow
def test_module_entry_point_prints_only_json_on_stdout(tmp_path):
    gt = _csv(tmp_path / "gt.csv", [("a.png", 1), ("b.png", 2)])
    out = subprocess.run([sys.executable, "-m", "common.evaluate", "uda", str(gt), str(gt), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"uda": 1.0, "correct": 2, "n": 2, "missing_in_pred": [], "extra_in_pred": []}
    bad = subprocess.run([sys.executable, "-m", "common.evaluate", "face", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.strip().startswith("error: ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_main_closed_pipe_is_quiet():
    """`python -m ... | head` closing stdout early: no traceback, exit 141 (as a shell tool killed by SIGPIPE)."""
    code = ("from common.errors import cli_main\n"
            "def main(argv):\n    for i in range(200000):\n        print('line', i)\n"
            "cli_main(main)\n")
    r = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -c \"$CODE\" | head -c 10 >/dev/null"],
                       cwd=REPO, env={"CODE": code, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 141 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-500:])
