"""The main job on what ships with the repo: the three entry scripts with the shipped weights, scored.

    python scripts/demo.py [--data hw2_data] [--out out]

1. Problem 3: ``hw2_3.sh`` labels the USPS val images (MNIST-M -> USPS, the improved DANN);
   accuracy against usps/val.csv.
2. Problem 1: ``hw2_1.sh`` writes 1000 faces (method B, best of 2 noises by its D); face score and
   FID against face/val.
3. Problem 2: ``hw2_2.sh`` writes 1000 digits (diffusion, UniPC 8 steps, w = 2); the course
   classifier's accuracy (when ``Classifier.pth`` is there) and FID against mnistm val.

FID uses the reference statistics that ship in common/fid_stats/. A grid image per problem goes
beside the outputs; the last lines are a table of what was written and what it scored.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

from common.cli import examples
from common.errors import DataError, UserError, cli_main

REPO = Path(__file__).resolve().parents[1]


def entry(script: str, *args: str) -> float:
    """Run ``bash <script> args...`` from the repo; its wall time in seconds."""
    t = time.time()
    r = subprocess.run(["bash", str(REPO / script), *args])
    if r.returncode != 0:
        raise UserError(f"{script} failed (exit {r.returncode})")
    return time.time() - t


def grid(folder: Path, out: Path, n: int, nrow: int, size: int) -> Path:
    """The first ``n`` images of ``folder`` (sorted by name) as one PNG grid."""
    import torch

    from common.data import load_image, save_grid, to_float
    names = sorted(os.listdir(folder))
    if len(names) > n and nrow == 10 and n == 100:  # digits: the first 10 of each digit, a row each
        names = [x for d in range(10) for x in sorted(m for m in names if m.startswith(f"{d}_"))[:10]]
    x = torch.stack([torch.from_numpy(load_image(folder / m, 3, size)).permute(2, 0, 1) for m in names[:n]])
    save_grid(to_float(x), out, nrow=nrow)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=examples("python scripts/demo.py", "make demo"))
    p.add_argument("--data", type=Path, default=REPO / "hw2_data", help="data folder (default: hw2_data)")
    p.add_argument("--out", type=Path, default=REPO / "out", help="where the outputs go (default: out)")
    a = p.parse_args(argv)
    from common import fid
    from common.data import digit_split
    from common.digit_classifier import accuracy_of_folder, load_classifier
    from common.evaluate import split_reference
    from common.face_score import face_score
    from common.uda import uda_accuracy

    face_val = a.data / "face" / "val"
    if not face_val.is_dir():
        raise DataError(f"data not found: {face_val} (run: bash hw2_download.sh)")
    a.out.mkdir(parents=True, exist_ok=True)
    refs = a.out / "references"
    rows = []

    print("== problem 3: MNIST-M -> USPS, labels of the usps val images", flush=True)
    usps = digit_split(a.data, "usps", "val")
    val_dir = split_reference(usps.csv, refs)  # a folder of just the val images (hard links)
    pred = a.out / "p3_usps_pred.csv"
    s = entry("hw2_3.sh", str(val_dir), str(pred), "usps")
    acc = uda_accuracy(pred, usps.csv).accuracy
    rows.append(("3 adaptation", str(pred), "-", f"accuracy {100 * acc:.2f} % on usps val", s))

    print("== problem 1: 1000 faces", flush=True)
    faces = a.out / "p1_faces"
    s = entry("hw2_1.sh", str(faces))
    face = face_score(faces, progress=True).percent
    fid_faces = fid.fid_from_folders(faces, face_val, progress=True)
    g1 = grid(faces, a.out / "p1_grid.png", 64, 8, 64)
    rows.append(("1 faces", str(faces), str(g1), f"FID {fid_faces:.2f}, face score {face:.1f} %", s))

    print("== problem 2: 1000 digits", flush=True)
    digits = a.out / "p2_digits"
    s = entry("hw2_2.sh", str(digits))
    mnistm = digit_split(a.data, "mnistm", "val")
    fid_digits = fid.fid_from_folders(digits, split_reference(mnistm.csv, refs), progress=True)
    note = ""
    try:
        load_classifier()
        score = f"accuracy {100 * accuracy_of_folder(digits, progress=True).accuracy:.1f} %, "
    except UserError as e:
        score = "accuracy not measured, "
        note = (f"note: {str(e).split(':')[0]}: the course's Classifier.pth scores the digits; put it at "
                f"../shared/evaluators/Classifier.pth or set HW2_CLASSIFIER=PATH")
    g2 = grid(digits, a.out / "p2_grid.png", 100, 10, 28)
    rows.append(("2 digits", str(digits), str(g2), f"{score}FID {fid_digits:.2f}", s))

    print("\nproblem       | output                         | grid                    | score (wall time)")
    print("--------------+--------------------------------+-------------------------+------------------")
    for name, out, g, score, secs in rows:
        print(f"{name:13s} | {_rel(out):30s} | {_rel(g):23s} | {score} ({secs:.0f} s)")
    if note:
        print(note)
    return 0


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


if __name__ == "__main__":
    cli_main(main)
