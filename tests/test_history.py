"""Training history across stages (common/history.py) and the problem-2 snapshot evaluator."""
from __future__ import annotations

import json
import math

import p2_eval_snapshots
import pytest
import torch
from PIL import Image

from common.errors import UserError
from common.history import (add_to_history, checkpoint_step, evaluate_snapshots, mark_shipped, plot_history,
                            read_history, stage_summary)
from common.training import read_jsonl


def test_evaluate_snapshots_runs_each_checkpoint_once(tmp_path):
    a, b = tmp_path / "step_0000100.pt", tmp_path / "step_0000200.pt"
    a.write_bytes(b"a")
    b.write_bytes(b"bb")
    calls = []

    def evaluate(c):
        calls.append(c.name)
        return {"fid": float(c.stat().st_size)}

    out = tmp_path / "eval.jsonl"
    rows = evaluate_snapshots([a, b], out, evaluate)
    assert [r["fid"] for r in rows] == [1.0, 2.0] and calls == [a.name, b.name]
    assert evaluate_snapshots([b, a], out, evaluate)[0]["fid"] == 2.0 and len(calls) == 2  # resumed: nothing redone
    a.write_bytes(b"aaa")  # the file changed (same path, new size): evaluated again
    assert evaluate_snapshots([a], out, evaluate)[0]["fid"] == 3.0 and len(calls) == 3
    assert len(read_jsonl(out)) == 3
    assert evaluate_snapshots([a], out, evaluate, tag="K 8")[0]["tag"] == "K 8" and len(calls) == 4  # other options
    assert evaluate_snapshots([a], out, evaluate, tag="K 8")[0]["fid"] == 3.0 and len(calls) == 4
    with pytest.raises(UserError, match="nope.pt"):
        evaluate_snapshots([a, tmp_path / "nope.pt"], out, evaluate)


def test_history_counts_steps_across_stages_and_marks_the_shipped_one(tmp_path):
    h = tmp_path / "history.jsonl"
    gpu = [{"checkpoint": "runs/g/snapshots/step_0001000.pt", "fid": 40.0, "face_score": 70.0, "size": 1}]
    add_to_history(h, gpu, "GPU from scratch", 0, ("fid", "face_score"))
    cpu = [{"checkpoint": f"runs/c/snapshots/step_{s:07d}.pt", "fid": f} for s, f in ((250, 35.0), (500, 33.0))]
    add_to_history(h, cpu, "CPU, lower lr", 1000, ("fid", "face_score"))
    rows = read_history(h)
    assert [(r["step"], r["run_step"], r["stage"]) for r in rows] == [
        (1000, 1000, "GPU from scratch"), (1250, 250, "CPU, lower lr"), (1500, 500, "CPU, lower lr")]
    assert "size" not in rows[0] and rows[0]["face_score"] == 70.0 and "face_score" not in rows[1]
    assert mark_shipped(h, "runs/c/snapshots/step_0000500.pt")["step"] == 1500
    # evaluated again (e.g. with a new metric): replaced, not repeated, and still the shipped one
    add_to_history(h, [{**cpu[1], "fid": 32.5}], "CPU, lower lr", 1000, ("fid",))
    rows = read_history(h)
    assert len(rows) == 3 and [r["fid"] for r in rows if r.get("shipped")] == [32.5]
    mark_shipped(h, gpu[0]["checkpoint"])
    assert [r["step"] for r in read_history(h) if r.get("shipped")] == [1000]  # only one shipped row
    with pytest.raises(UserError, match="not in the history"):
        mark_shipped(h, "runs/x/step_0000001.pt")
    with pytest.raises(UserError, match="--stage"):
        add_to_history(h, cpu, "", 0, ("fid",))
    with pytest.raises(UserError, match="step-offset"):
        add_to_history(h, cpu, "x", -1, ("fid",))


def test_stage_gains_follow_the_order_stages_were_trained_in(tmp_path):
    """A branch trained later from an earlier snapshot (lower steps) is judged after the stages before it."""
    h = tmp_path / "history.jsonl"
    add_to_history(h, [{"checkpoint": "g/step_0001000.pt", "fid": 30.0}], "GPU", 0, ("fid",))
    assert read_history(h)[0]["added"]  # when the row was added: the stage order comes from it
    old = {"step": 500, "stage": "before 'added'", "checkpoint": "o/step_0000500.pt", "run_step": 500, "fid": 40.0}
    h.write_text(h.read_text() + json.dumps(old) + "\n")
    add_to_history(h, [{"checkpoint": "o/step_0000500.pt", "fid": 39.0}], "before 'added'", 0, ("fid",))
    assert [r.get("added") for r in read_history(h)][0] is None  # re-evaluated: keeps its (earliest) place
    rows = [{"step": 1000, "stage": "GPU", "fid": 30.0, "checkpoint": "a"},  # rows from before 'added'
            {"step": 1500, "stage": "CPU lr 1e-5", "fid": 29.7, "checkpoint": "b"},
            {"step": 1250, "stage": "CPU, new machine, from the shipped G", "fid": 29.5, "checkpoint": "c",
             "added": "2026-11-27T10:00:00+00:00"},
            {"step": 1400, "stage": "later still", "fid": 29.6, "checkpoint": "d", "added": "2026-11-28T10:00:00+00:00"}]
    got = [(st["stage"], round(st["gain"], 2)) for st in stage_summary(sorted(rows, key=lambda r: r["step"]))]
    assert got == [("GPU", 0.0), ("CPU lr 1e-5", 0.3), ("CPU, new machine, from the shipped G", 0.2),
                   ("later still", 0.0)]


def test_checkpoint_step_from_name_or_file(tmp_path):
    assert checkpoint_step("runs/x/snapshots/step_0012345.pt") == 12345
    torch.save({"step": 77}, tmp_path / "model.pt")
    assert checkpoint_step(tmp_path / "model.pt") == 77
    torch.save({"G": {}}, tmp_path / "nostep.pt")
    with pytest.raises(UserError, match="nostep.pt"):
        checkpoint_step(tmp_path / "nostep.pt")


def test_plot_history_draws_stages_target_and_shipped(tmp_path):
    rows = [{"step": 100 * i, "stage": "a" if i < 3 else "b", "fid": 50.0 - i, "face_score": 70.0 + i,
             "checkpoint": str(i), "shipped": i == 4} for i in range(1, 6)]
    png = tmp_path / "h.png"
    assert plot_history(rows, png, "method A", target=27.0, second="face_score")
    w, h = Image.open(png).size
    assert w > 500 and h > 300
    assert not plot_history([{"step": 1, "stage": "a", "checkpoint": "x"}], tmp_path / "none.png", "t")
    assert not (tmp_path / "none.png").exists()


@pytest.mark.slow
def test_p2_eval_snapshots_end_to_end(tiny_digits, tmp_path, monkeypatch, capsys):
    """A tiny ACGAN's snapshots through hw2_2 -> classifier -> FID, into a history; resumable."""
    from common.digit_classifier import LeNet
    from p2_diffusion_acgan import train as p2train
    monkeypatch.setenv("HW2_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "acgan"
    assert p2train.main(["--model", "acgan", "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
                         "--g-channels", "8", "--d-channels", "8", "--max-steps", "4", "--snapshot-every", "2",
                         "--sample-every", "0", "--threads", "1"]) == 0
    snaps = sorted((run / "snapshots").glob("step_*.pt"))
    assert [checkpoint_step(s) for s in snaps] == [2, 4]
    clf = LeNet()
    with torch.no_grad():  # a classifier that always says 7: accuracy exactly 1/10, worst digit 0 %
        for p in clf.parameters():
            p.zero_()
        clf.fc3.bias[7] = 1.0
    torch.save({"state_dict": clf.state_dict()}, tmp_path / "c.pth")
    hist, out = tmp_path / "history.jsonl", tmp_path / "eval.jsonl"
    argv = [*map(str, snaps), "--data", str(tiny_digits), "--classifier", str(tmp_path / "c.pth"),
            "--fid-dims", "64", "--out", str(out), "--history", str(hist), "--stage", "tiny", "--step-offset", "10"]
    assert p2_eval_snapshots.main(argv) == 0
    recs = read_jsonl(out)
    assert len(recs) == 2 and all(r["n"] == 1000 for r in recs)
    assert all(r["accuracy"] == pytest.approx(0.1) and r["worst_digit_acc"] == 0.0 for r in recs)
    assert all(math.isfinite(r["fid"]) and r["fid"] > 0 for r in recs) and recs[0]["fid"] != recs[1]["fid"]
    assert [r["step"] for r in read_history(hist)] == [12, 14]
    assert "FID" in capsys.readouterr().out
    assert p2_eval_snapshots.main(argv) == 0 and len(read_jsonl(out)) == 2  # nothing evaluated twice
    with pytest.raises(UserError, match="--stage"):
        p2_eval_snapshots.main([str(snaps[0]), "--data", str(tiny_digits), "--history", str(hist)])
    with pytest.raises(UserError, match="nowhere"):
        p2_eval_snapshots.main([str(snaps[0]), "--data", str(tmp_path / "nowhere")])
    assert json.loads(hist.read_text().splitlines()[0])["stage"] == "tiny"


def test_p2_eval_snapshots_passes_sampling_options_to_hw2_2(tmp_path):
    import argparse

    from p2_diffusion_acgan.inference import main as hw2_2_main
    a = argparse.Namespace(candidates=1, accept_prob=1.0, sampler="ddim", steps=12, guidance=2.0, spacing="logsnr",
                           guidance_interval=[80, 600], precision="bf16", seed=3, guide="g.pt",
                           guide_weight=0.5)
    opts = p2_eval_snapshots.sampling_options(a)
    assert opts == ["--candidates", "1", "--accept-prob", "1.0", "--sampler", "ddim", "--steps", "12",
                    "--guidance", "2.0", "--spacing", "logsnr", "--precision", "bf16", "--seed", "3",
                    "--guide", "g.pt", "--guide-weight", "0.5", "--guidance-interval", "80", "600"]
    with pytest.raises(UserError, match="nope.pt"):  # hw2_2 parses every one of them (and then needs a checkpoint)
        hw2_2_main([str(tmp_path / "out"), "--checkpoint", str(tmp_path / "nope.pt"), *opts])
