"""Predict digit labels of a folder of target-domain images (the hw2_3.sh entry point).

    bash hw2_3.sh TEST_DIR OUT_CSV [TARGET] [--checkpoint PATH] [--batch-size N] [--device D]

Writes ``image_name,label`` with one row per image of TEST_DIR (sorted by name). The target domain
(mnistm, svhn or usps) is TARGET when given, otherwise read from TEST_DIR's path; it picks the
shipped checkpoint ``checkpoints/p3_<source>_<target>_improved.pt``. Images of any size or
channel count are converted to 28x28 RGB; non-image files are skipped with a warning.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import CHECKPOINT_DIR, shipped_path
from common.cli import add_device_args, apply_threads, command_parser
from common.data import IMAGE_EXTENSIONS, check_writable_place, is_image_file, load_image, to_float
from common.errors import DataError, UserError, cli_main
from common.training import atomic_write_bytes, pick_device
from p3_dann.config import DOMAINS
from p3_dann.evaluate import load_model

# target domain -> (source domain of its scenario, shipped checkpoint)
SCENARIOS = {"usps": "mnistm", "svhn": "mnistm", "mnistm": "svhn"}


def default_checkpoint(target: str) -> Path:
    return shipped_path(f"p3_{SCENARIOS[target]}_{target}_improved", CHECKPOINT_DIR)


def infer_target(test_dir: str, target: str | None) -> str:
    """``target`` when given, else the domain named in the path (the last one when several are)."""
    if target is not None:
        t = target.lower()
        if t not in DOMAINS:
            raise UserError(f"unknown target domain {target!r}; choose from {', '.join(DOMAINS)}")
        return t
    path = str(Path(test_dir).resolve()).lower()
    found = [(path.rfind(d), d) for d in DOMAINS if d in path]
    if not found:
        raise UserError(f"cannot tell the target domain from the path {test_dir!r}; "
                        f"pass it as the third argument ({', '.join(DOMAINS)})")
    return max(found)[1]


def read_folder(test_dir: str | os.PathLike) -> tuple[list[str], torch.Tensor]:
    """Sorted readable image names + uint8 (N, 3, 28, 28); skipped files are reported on stderr."""
    folder = Path(test_dir)
    if not folder.exists():
        raise DataError(f"test folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    entries = sorted(e for e in os.listdir(folder) if (folder / e).is_file())
    images = [e for e in entries if is_image_file(e)]
    others = [e for e in entries if not is_image_file(e)]
    if others:
        print(f"warning: skipped {len(others)} non-image file(s) in {folder} (e.g. {others[0]}); "
              f"images are {', '.join(IMAGE_EXTENSIONS)}", file=sys.stderr)
    names, arrays, bad = [], [], []
    for n in images:
        try:
            arrays.append(load_image(folder / n, channels=3, size=28))
            names.append(n)
        except DataError:
            bad.append(n)
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s) in {folder} (e.g. {bad[0]})", file=sys.stderr)
    if not names:
        raise DataError(f"no readable images in {folder}")
    return names, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict_labels(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512) -> list[int]:
    """Argmax labels of uint8 images (N, 3, 28, 28)."""
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(to_float(x[i:i + batch_size].to(device))).argmax(1).cpu())
    return torch.cat(out).tolist()


def check_output_csv(path: str | os.PathLike) -> Path:
    """OUT_CSV must be a file name in a writable place (one-line errors before any work)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output csv {path} is an existing folder; give a file name")
    check_writable_place(path, "the output csv")
    return path


def write_csv(path: str | os.PathLike, names: list[str], labels: list[int]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_name", "label"])
    w.writerows(zip(names, labels))
    atomic_write_bytes(path, buf.getvalue().encode())  # creates the folder


def main(argv=None) -> int:
    parser = command_parser("hw2_3.sh", __doc__,
                            "bash hw2_3.sh hw2_data/digits/usps/data out/usps_pred.csv",
                            "bash hw2_3.sh my_images/ pred.csv usps          # the target domain named explicitly",
                            "bash hw2_3.sh hw2_data/digits/usps/data pred.csv --checkpoint checkpoints/p3_mnistm_usps_dann.pt")
    parser.add_argument("test_dir", help="folder of the images to label")
    parser.add_argument("out_csv", help="csv to write: image_name,label for every image of TEST_DIR")
    parser.add_argument("target", nargs="?", default=None,
                        help="target domain: mnistm, svhn or usps (default: the domain named in TEST_DIR's path)")
    parser.add_argument("--checkpoint", default=None,
                        help="model to use (default: checkpoints/p3_<source>_<target>_improved.pt)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per forward pass (default: 512)")
    add_device_args(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    check_output_csv(args.out_csv)  # before any work
    target = infer_target(args.test_dir, args.target)
    if args.checkpoint is None:
        ck = default_checkpoint(target)
        if not ck.is_file():
            src = SCENARIOS[target]
            raise UserError(f"no checkpoint for target {target} yet ({ck} is missing); train one with: "
                            f"python -m p3_dann.train --source {src} --target {target} --mode improved "
                            f"--export checkpoints/{ck.name}")
    else:
        ck = Path(args.checkpoint)
    torch.manual_seed(0)
    device = pick_device(args.device)
    model, cfg = load_model(ck, device)  # one-line error for a missing or broken file
    if cfg.target != target:
        print(f"warning: checkpoint {ck.name} was adapted to {cfg.target}, images are {target}", file=sys.stderr)
    names, x = read_folder(args.test_dir)
    print(f"hw2_3: {cfg.source} -> {cfg.target} {cfg.mode} model {ck}, target domain {target}, {len(names)} images",
          file=sys.stderr)
    labels = predict_labels(model, x, device, args.batch_size)
    write_csv(args.out_csv, names, labels)
    print(f"wrote {len(names)} predictions to {args.out_csv}", file=sys.stderr)
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
