"""Generate 1000 faces: ``bash hw2_1.sh OUT [--method A|B] [--checkpoint PATH]``.

Writes ``OUT/0000.png`` ... ``OUT/0999.png`` (64x64 RGB) from the generator in the checkpoint
(default ``checkpoints/p1_method<M>.pt``, method B). The noise comes from one seeded CPU generator,
so the same checkpoint gives the same bytes on every run. The generator is rebuilt from the
checkpoint's config alone.

``--candidates K`` (default: the checkpoint config's ``candidates``, else 1) draws K noises per image
(the first is the K = 1 noise) and keeps the image the checkpoint's own discriminator rates most
real: rejection sampling with the trained D (Azadi et al. 2019, here its best-of-K form). It trades
a little FID for images that look more like faces (see README); ``--candidates 1`` is the plain G.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Sequence

import torch

from common.checkpoint import generator_state_dict, shipped_path
from common.cli import add_device_args, apply_threads, command_parser
from common.data import check_output_dir, save_pngs, staged_output_dir
from common.errors import UserError, cli_main
from common.gan import generate
from common.training import first_line, float_state_dict, load_checkpoint, pick_device
from p1_gan.config import METHODS, build_generator, build_models, config_from_checkpoint


def default_checkpoint(method: str) -> Path:
    return shipped_path(f"p1_method{method}")


def train_hint(method: str) -> str:
    return (f"train it with: python -m p1_gan.train --method {method}, then "
            f"python -m p1_gan.export runs/p1_{method}/best.pt checkpoints/p1_method{method}.pt")


def load_generator(path: Path, method: str | None = None) -> tuple[torch.nn.Module, object]:
    """(G in eval mode, config) from a shipped checkpoint or a run's last.pt / best.pt."""
    G, _, cfg, _ = load_models(path, method)
    return G, cfg


def load_models(path: Path, method: str | None = None):
    """(G, D or None, config, the config as saved) from a shipped checkpoint or a run's checkpoint,
    both in eval mode; D is None when the checkpoint keeps none."""
    ck = load_checkpoint(path)
    cfg = config_from_checkpoint(ck)
    if method is not None and cfg.method != method:
        raise UserError(f"{path} holds a method {cfg.method} generator, not {method}")
    G, D = build_models(cfg) if isinstance(ck.get("D"), dict) else (build_generator(cfg), None)
    try:
        G.load_state_dict(generator_state_dict(ck))
        if D is not None:
            D.load_state_dict(float_state_dict(ck["D"]))
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match its config ({first_line(e, 150)})") from None
    return G.eval(), (D.eval() if D is not None else None), cfg, ck["config"]


def candidate_seed(seed: int, j: int) -> int:
    """Noise seed of candidate j (candidate 0 is the plain draw)."""
    return seed if j == 0 else seed + 1_000_003 * j


@torch.no_grad()
def realness(D: torch.nn.Module, x: torch.Tensor, batch_size: int = 250, device=None) -> torch.Tensor:
    """D's real/fake logit (N,) of CPU images x, scored on ``device`` in batches."""
    device = torch.device(device) if device is not None else next(D.parameters()).device
    return torch.cat([D(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def generate_best_of(G: torch.nn.Module, D: torch.nn.Module | None, n: int, z_dim: int, k: int = 1, seed: int = 0,
                     batch_size: int = 250, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (CPU, [-1, 1]): for each, of k candidates (noise seeds ``candidate_seed(seed, j)``) the
    one D rates most real (ties: the earliest), and which candidate that was (n,). k = 1 is
    ``generate``'s plain draw and needs no D. Image i does not depend on the batch size."""
    if k < 1:
        raise UserError(f"candidates must be at least 1, got {k}")
    if k > 1 and D is None:
        raise UserError(f"best of {k} candidates needs a discriminator")
    best = generate(G, n, z_dim, seed=seed, batch_size=batch_size, device=device)
    pick = torch.zeros(n, dtype=torch.long)
    if k == 1:
        return best, pick
    best_s = realness(D, best, batch_size, device)
    for j in range(1, k):
        x = generate(G, n, z_dim, seed=candidate_seed(seed, j), batch_size=batch_size, device=device)
        s = realness(D, x, batch_size, device)
        better = s > best_s
        best[better], best_s[better], pick[better] = x[better], s[better], j
    return best, pick


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("hw2_1.sh", __doc__,
                       "bash hw2_1.sh out/faces                     # 1000 faces of method B",
                       "bash hw2_1.sh out/faces_a --method A --seed 1",
                       "bash hw2_1.sh out/plain --candidates 1      # B's plain generator, no selection by D")
    p.add_argument("out", help="output folder, created if missing")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="A (reference DCGAN) or B (spectral-norm hinge GAN; default)")
    p.add_argument("--checkpoint", default=None, help="weights to sample from (default: checkpoints/p1_method<M>.pt)")
    p.add_argument("--n", type=int, default=1000, help="number of images (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise; the same seed gives the same bytes (default: 0)")
    p.add_argument("--batch-size", type=int, default=250,
                   help="images per generator call; changes speed and memory, not the images (default: 250)")
    p.add_argument("--candidates", type=int, default=None, metavar="K",
                   help="keep the best of K noises per image by the checkpoint's D (default: its config's, else 1)")
    add_device_args(p)
    args = p.parse_args(argv)
    apply_threads(args.threads)
    check_output_dir(args.out)  # before any work
    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be >= 1")
    if args.candidates is not None and args.candidates < 1:
        raise UserError(f"--candidates must be at least 1, got {args.candidates}")
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
    G, D, cfg, saved = load_models(path, method)
    k = args.candidates if args.candidates is not None else int(saved.get("candidates", 1))
    if k > 1 and D is None:
        raise UserError(f"{path} keeps no discriminator, so --candidates must be 1 "
                        "(ship one with scripts/ship_checkpoint.py --discriminator RUN/last.pt)")
    how = f", best of {k} noises by its D" if k > 1 else ", plain G"
    print(f"hw2_1: method {cfg.method}{how}, {path}, seed {args.seed}, {args.n} images", flush=True)
    x, _ = generate_best_of(G.to(device), D.to(device) if D is not None else None, args.n, cfg.z_dim, k,
                            seed=args.seed, batch_size=args.batch_size, device=device)
    with staged_output_dir(args.out) as stage:  # a killed run leaves no partial output
        save_pngs(x, [f"{i:04d}.png" for i in range(args.n)], stage)
    print(f"wrote {args.n} images to {args.out} in {time.time() - t0:.1f}s")
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
