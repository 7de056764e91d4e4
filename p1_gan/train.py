"""Train the face GANs of problem 1 with the shared loop (common/gan.py).

    python -m p1_gan.train --method A                     # hw2_data/face/train -> runs/p1_A/
    python -m p1_gan.train --method B --ngf 32 --ndf 32 --max-steps 20000
    python -m p1_gan.train --method B --dry-run           # 2 steps on 64 images in a throw-away folder

Rerunning the same command resumes from ``<run-dir>/last.pt`` (the saved config.json is the base;
options given on the command line override it, e.g. a larger ``--max-steps``). Ctrl-C / SIGTERM
saves and exits. Every ``--eval-every`` steps the FID of ``--fid-n`` images (EMA generator) against
``face/val`` is logged and the best state kept as ``best.pt``; ship it with
``python -m p1_gan.export runs/p1_B/best.pt checkpoints/p1_methodB.pt``.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path
from typing import Sequence

import torch

from common.cli import (add_config_args, add_deprecated, add_run_args, command_parser, config_from_args,
                         config_from_dict, dry_run_dir)
from common.data import TensorBatches
from common.errors import DataError, UserError, cli_main
from common.gan import train_gan
from common.training import count_params, pick_device, seed_everything
from p1_gan.config import METHODS, P1Config, build_models, check_config, method_defaults
from p1_gan.data import face_folder, load_faces
from p1_gan.evaluate import make_fid_eval


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m p1_gan.train", __doc__,
                       "python -m p1_gan.train --method B                     # runs/p1_B/, resumable",
                       "python -m p1_gan.train --method A --device cuda --max-steps 6000",
                       "python -m p1_gan.train --method B --threads 1 --no-progress   # beside other work on a CPU")
    add_run_args(p, data_default="hw2_data", data_help="data folder holding face/train (and face/val for FID); a face "
                 "folder itself also works", run_default="runs/p1_<method>")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N training images (default: all)")
    add_deprecated(p, "--limit", "--max-images", "max_images", type=int)
    p.add_argument("--cache-dir", default="runs/p1_cache",
                   help="where the decoded training set is cached as one tensor (default: runs/p1_cache)")
    add_config_args(p, P1Config)
    return p


def resolve_config(args: argparse.Namespace, run_dir: Path | None) -> P1Config:
    """Saved config of the run folder (resume) or the method's defaults, then CLI overrides."""
    saved = run_dir / "config.json" if run_dir is not None else None
    if saved is not None and saved.is_file() and (run_dir / "last.pt").is_file():
        base = config_from_dict(P1Config, json.loads(saved.read_text()))
        if args.method is not None and args.method != base.method:
            raise UserError(f"{run_dir} holds a method {base.method} run, not {args.method}; use another --run-dir")
    else:
        base = method_defaults(args.method or "B")
    cfg = config_from_args(P1Config, args, base)
    check_config(cfg)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.method is not None and args.method not in METHODS:
        raise UserError(f"unknown method {args.method!r} (choose A or B)")
    method = args.method or "B"
    if args.dry_run:
        run_dir = dry_run_dir(args.run_dir, f"p1_{method}")
        args.max_images = min(args.max_images or 64, 64)
    else:
        run_dir = Path(args.run_dir or f"runs/p1_{method}")
    cfg = resolve_config(args, run_dir)
    if args.dry_run:
        cfg = dataclasses.replace(cfg, max_steps=2, batch_size=16, sample_every=2, eval_every=0, log_every=1)
    data = face_folder(args.data)
    train_dir = data / "train"
    if not train_dir.is_dir():
        raise DataError(f"training folder not found: {train_dir} (run: bash hw2_download.sh)")
    device = pick_device(cfg.device)
    x = load_faces(train_dir, args.max_images, Path(args.cache_dir))
    if len(x) < cfg.batch_size:
        raise DataError(f"{len(x)} training images in {train_dir} is fewer than batch size {cfg.batch_size}")
    if device.type == "cuda":
        x = x.to(device)  # 38k x 12 KB uint8 fits easily; batches are then cut on the GPU
    eval_fn = None
    if cfg.eval_every > 0:
        val_dir = data / "val"
        if val_dir.is_dir():
            eval_fn = make_fid_eval(val_dir, cfg.fid_n, cfg.z_dim, device)
        else:
            print(f"warning: {val_dir} not found: no FID during training")

    def batches(start_step: int) -> TensorBatches:  # reseeded from the step on resume
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start_step)
        return TensorBatches(x, batch_size=cfg.batch_size, generator=g)

    seed_everything(cfg.seed)  # the initial weights come from the seed too: two fresh runs are identical
    G, D = build_models(cfg)
    print(f"method {cfg.method}: G {count_params(G) / 1e6:.2f}M params, D {count_params(D) / 1e6:.2f}M params, "
          f"{len(x)} images, device {device}, run folder {run_dir}")
    out = train_gan(G, D, batches, cfg, run_dir, eval_fn=eval_fn, progress=not args.no_progress)
    print(f"step {out['step']}: {out['last']}" + (f"; best {out['best']}" if out["best"] else ""))
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
