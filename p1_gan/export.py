"""Ship a trained generator: ``python -m p1_gan.export runs/p1_B/best.pt checkpoints/p1_methodB.pt``.

Writes the config + generator weights (EMA when the run kept one) in fp16, and a JSON beside it with
the step and the metrics reached (the best in-training FID; pass ``--fid``/``--face-score`` to add
numbers measured on 1000 images with the full evaluation).
"""
from __future__ import annotations

import argparse
from typing import Sequence

from common.checkpoint import export_generator
from common.errors import cli_main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p1_gan.export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_checkpoint", help="a run's best.pt or last.pt")
    p.add_argument("out", help="shipped checkpoint, e.g. checkpoints/p1_methodB.pt")
    p.add_argument("--fid", type=float, default=None, help="FID of 1000 images vs face/val (full evaluation)")
    p.add_argument("--face-score", type=float, default=None, help="face score in %% (full evaluation)")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default fp16)")
    args = p.parse_args(argv)
    metrics = {k: v for k, v in (("fid_1000", args.fid), ("face_score", args.face_score)) if v is not None}
    info = export_generator(args.run_checkpoint, args.out, metrics, fp16=not args.fp32)
    print(f"wrote {args.out} (method {info['config'].get('method')}, step {info['step']}, metrics {info['metrics']})")
    return 0


if __name__ == "__main__":
    cli_main(main)
