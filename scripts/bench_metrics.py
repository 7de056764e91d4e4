"""Images per second of FID feature extraction (pytorch-fid's TF-Inception, 64x64 -> 299x299).

    python scripts/bench_metrics.py                       # auto device, default batch sizes (< 1 min on CPU)
    python scripts/bench_metrics.py --device cuda --batch-sizes 50 200 500 --iters 10

Prints one row per (device, batch size): images/s and ms per batch, after one warm-up batch.
On CUDA it also times channels_last (same fp32 numbers up to rounding).
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch

from common.errors import UserError, cli_main
from common.fid import fid_inception
from common.training import pick_device


@torch.no_grad()
def bench(model: torch.nn.Module, device: torch.device, batch_size: int, iters: int,
          channels_last: bool = False) -> float:
    """Seconds per batch of ``batch_size`` 64x64 images (after one warm-up batch)."""
    x = torch.rand(batch_size, 3, 64, 64, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model(x)
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        model(x)
    sync()
    return (time.perf_counter() - t) / iters


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="default: 8 16 on CPU, 50 200 500 on CUDA")
    p.add_argument("--iters", type=int, default=None, help="timed batches per size (default: 1 CPU, 10 CUDA)")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    cuda = device.type == "cuda"
    sizes = a.batch_sizes or ([50, 200, 500] if cuda else [8, 16])
    iters = a.iters or (10 if cuda else 1)
    if min(sizes) < 1 or iters < 1:
        raise UserError("batch sizes and --iters must be >= 1")
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    model = fid_inception(device)
    print(f"FID feature extraction (pool3, 2048-d) on {name}, torch {torch.__version__}")
    print(f"{'layout':>14} {'batch':>6} {'ms/batch':>10} {'images/s':>10}")
    layouts = [False, True] if cuda else [False]
    for cl in layouts:
        m = model.to(memory_format=torch.channels_last) if cl else model
        for bs in sizes:
            s = bench(m, device, bs, iters, cl)
            print(f"{'channels_last' if cl else 'contiguous':>14} {bs:>6} {1000 * s:>10.1f} {bs / s:>10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    cli_main(main)
