"""Generate 1000 faces: ``bash hw2_1.sh OUT [--method A|B] [--checkpoint PATH]``.

Writes ``OUT/0000.png`` ... ``OUT/0999.png`` (64x64 RGB) from the generator in the checkpoint
(default ``checkpoints/p1_method<M>.pt``, method B). The noise comes from one seeded CPU generator,
so the same checkpoint gives the same bytes on every run. The generator is rebuilt from the
checkpoint's config alone.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import torch

from common.data import save_pngs
from common.errors import UserError, cli_main
from common.gan import generate, generator_state_dict
from common.training import load_checkpoint, pick_device

from .config import METHODS, build_generator, config_from_checkpoint

REPO = Path(__file__).resolve().parents[1]


def default_checkpoint(method: str) -> Path:
    return REPO / "checkpoints" / f"p1_method{method}.pt"


def train_hint(method: str) -> str:
    return (f"train it with: python -m p1_gan.train --method {method} --data hw2_data/face, then "
            f"python -m p1_gan.export runs/p1_{method}/best.pt checkpoints/p1_method{method}.pt")


def load_generator(path: Path, method: str | None = None) -> tuple[torch.nn.Module, object]:
    """(G in eval mode, config) from a shipped checkpoint or a run's last.pt / best.pt."""
    ck = load_checkpoint(path)
    cfg = config_from_checkpoint(ck)
    if method is not None and cfg.method != method:
        raise UserError(f"{path} holds a method {cfg.method} generator, not {method}")
    G = build_generator(cfg)
    try:
        G.load_state_dict(generator_state_dict(ck))
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match its config ({str(e).splitlines()[0][:150]})") from None
    return G.eval(), cfg


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hw2_1.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--method", choices=METHODS, default=None, help="A (DCGAN) or B (improved, default)")
    p.add_argument("--checkpoint", default=None, help="default checkpoints/p1_method<M>.pt")
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be >= 1")
    method = args.method
    if args.checkpoint is None:
        method = method or "B"
        path = default_checkpoint(method)
        if not path.is_file():
            raise UserError(f"no trained method {method} weights at {path}; {train_hint(method)}")
    else:
        path = Path(args.checkpoint)
    device = pick_device(args.device)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    t0 = time.time()
    G, cfg = load_generator(path, method)
    x = generate(G.to(device), args.n, cfg.z_dim, seed=args.seed, batch_size=args.batch_size, device=device)
    save_pngs(x, [f"{i:04d}.png" for i in range(args.n)], args.out)
    print(f"wrote {args.n} images (method {cfg.method}) to {args.out} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    cli_main(main)
