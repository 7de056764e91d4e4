"""scripts/ship_checkpoint.py: weights (and D) to fp16, old headline fields under 'previous', dotted --set."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ship_checkpoint
import torch

from common.errors import UserError
from common.history import add_to_history, read_history
from common.training import load_checkpoint
from tests.conftest import REPO


def test_ship_moves_old_headline_to_previous_and_keeps_d(tmp_path):
    src = tmp_path / "snap.pt"
    torch.save({"version": 1, "step": 7, "config": {"guidance": 2.0, "arch": "acgan"},
                "model": {"w": torch.ones(3)}, "D": {"v": torch.ones(2)}}, src)
    ck_dir = tmp_path / "ck"
    ck_dir.mkdir()
    (ck_dir / "p2_acgan.json").write_text(json.dumps({"step": 3, "accuracy": 0.9, "training": {"minutes": 5},
                                                      "previous": {"step": 1}}))
    meta = ship_checkpoint.ship(src, "p2_acgan", ck_dir, ["accuracy=0.99", "training.epochs=2.5", "note=plain words"],
                                ["guidance=4.0"], "")
    ck = load_checkpoint(ck_dir / "p2_acgan.pt")
    assert ck["model"]["w"].dtype == torch.float16 and ck["config"]["guidance"] == 4.0
    assert ck["D"]["v"].dtype == torch.float16  # SRC's own D ships: a new machine can go on from the file
    saved = json.loads((ck_dir / "p2_acgan.json").read_text())
    assert saved == meta
    assert saved["previous"] == {"step": 3, "accuracy": 0.9}  # one level: the old 'previous' is dropped
    assert saved["step"] == 7 and saved["accuracy"] == 0.99 and saved["note"] == "plain words"
    assert saved["training"] == {"minutes": 5, "epochs": 2.5} and saved["source"] == str(src)
    assert saved["has_D"] and saved["discriminator_source"] == f"{src} (its own D, step 7)"
    meta = ship_checkpoint.ship(src, "p2_acgan", ck_dir, [], [], "", keep_d=False)  # --no-discriminator
    assert "D" not in load_checkpoint(ck_dir / "p2_acgan.pt") and not meta["has_D"]
    assert "discriminator_source" not in meta


@pytest.mark.slow
def test_ship_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"G": {"w": torch.ones(1)}}, bad)
    for args, msg in (([str(tmp_path / "nope.pt"), "x"], "checkpoint not found"),
                      ([str(bad), "x"], "is not a shipped form"),
                      ([str(bad), "x", "--set", "novalue"], "is not a shipped form")):
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "ship_checkpoint.py"), *args,
                            "--checkpoints", str(tmp_path / "ck")], capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and msg in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_ship_marks_the_snapshot_in_the_training_history(tmp_path):
    ck_dir = tmp_path / "ck"
    snaps = []
    for step in (100, 200):
        snaps.append(tmp_path / f"step_{step:07d}.pt")
        torch.save({"version": 1, "step": step, "config": {"arch": "acgan"}, "model": {"w": torch.ones(1)}}, snaps[-1])
    hist = ck_dir / "logs" / "p2_acgan" / "history.jsonl"
    add_to_history(hist, [{"checkpoint": str(snaps[0]), "fid": 50.0}], "stage", 0, ("fid",))
    with pytest.raises(UserError, match="not in p2_acgan's training history"):  # not evaluated: nothing written
        ship_checkpoint.ship(snaps[1], "p2_acgan", ck_dir, [], [], "")
    assert not (ck_dir / "p2_acgan.pt").exists()
    ship_checkpoint.ship(snaps[0], "p2_acgan", ck_dir, [], [], "")
    assert [r["step"] for r in read_history(hist) if r.get("shipped")] == [100]
    ship_checkpoint.ship(snaps[0], "p2_sagan", ck_dir, [], [], "")  # no history for that name: shipped all the same
    assert (ck_dir / "p2_sagan.pt").is_file()
