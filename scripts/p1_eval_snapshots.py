"""FID and face score of problem-1 generator checkpoints, exactly as graded: hw2_1's 1000 PNGs
(seed 0) -> ``common.evaluate`` (FID vs face/val, pytorch-fid convention; face score with dlib HOG).

    python scripts/p1_eval_snapshots.py runs/gpu_h200/p1_B/snapshots/step_00{09,12,15}000.pt
    python scripts/p1_eval_snapshots.py checkpoints/p1_methodA.pt --out runs/p1_eval.jsonl

One JSON line per checkpoint is appended to ``--out`` (default: ``snapshot_eval.jsonl`` beside the
first checkpoint) and a table is printed; already-evaluated checkpoints (same path and size) are
skipped, so an interrupted run resumes. ``--history checkpoints/logs/p1_methodA/history.jsonl
--stage "2026-11-26, CPU: lr 1e-5" --step-offset 52661`` also puts the results into the shipped
model's training history (``common/history.py``; the offset = the steps of the stages before).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Sequence

from common.errors import UserError, cli_main
from common.history import add_history_args, add_to_history, apply_history_args, evaluate_snapshots


def evaluate_checkpoint(ckpt: Path, val: Path, n: int = 1000, face: bool = True, candidates: int | None = None) -> dict:
    from common.fid import fid_from_folders
    from p1_gan.inference import main as generate_main
    with tempfile.TemporaryDirectory(prefix="p1_eval_") as tmp:
        t0 = time.time()
        extra = [] if candidates is None else ["--candidates", str(candidates)]
        generate_main([tmp, "--checkpoint", str(ckpt), "--n", str(n), "--device", "cpu", *extra])
        rec = {"n": n, "generate_s": round(time.time() - t0, 1)}
        if candidates is not None:
            rec["candidates"] = candidates
        rec["fid"] = fid_from_folders(tmp, val, device="cpu", progress=True)
        if face:
            from common.face_score import face_score
            rec["face_score"] = face_score(tmp).percent
    return rec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/p1_eval_snapshots.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", default="hw2_data/face", help="face folder holding val/")
    p.add_argument("--out", default=None)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--no-face", action="store_true")
    p.add_argument("--candidates", type=int, default=None, metavar="K",
                   help="hw2_1.sh --candidates K (default: each checkpoint's own setting)")
    add_history_args(p)
    a = p.parse_args(argv)
    apply_history_args(a)
    val = Path(a.data) / "val"
    if not val.is_dir():
        raise UserError(f"face val folder not found: {val} (run: bash hw2_download.sh)")
    out = Path(a.out) if a.out else Path(a.checkpoints[0]).parent / "snapshot_eval.jsonl"

    rows = evaluate_snapshots(a.checkpoints, out, lambda c: evaluate_checkpoint(c, val, a.n, face=not a.no_face,
                                                                               candidates=a.candidates),
                              tag="" if a.candidates is None else f"candidates {a.candidates}")
    for r in rows:
        print(f"{r['checkpoint']}: FID {r['fid']:.2f}"
              + (f", face score {r['face_score']:.1f} %" if "face_score" in r else ""))
    if a.history:
        add_to_history(a.history, rows, a.stage, a.step_offset, ("fid", "face_score"))
        print(f"added {len(rows)} rows to {a.history}")
    best = min(rows, key=lambda r: r["fid"])
    print(f"best FID: {best['checkpoint']} ({best['fid']:.2f})")
    return 0


if __name__ == "__main__":
    cli_main(main)
