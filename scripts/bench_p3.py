"""Throughput of problem 3: training images/s and epoch time per mode, inference images/s.

    python scripts/bench_p3.py [--steps 30] [--device auto] [--threads 0] [--json out.json]

Runs the real training step (``p3_dann.train.AdaptationStep``) of each mode on random uint8
images (no data needed). One "epoch" is one pass over the offline MNIST-M train split (47,201
images) for source/dann/improved, over USPS train (5,833) for target. Images/s counts every
image that goes through the network in a step (dann/improved: source + target batch).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common.errors import cli_main
from common.training import EMA, pick_device
from p3_dann.config import MODE_DEFAULTS, Config, build_model
from p3_dann.inference import predict_labels
from p3_dann.train import AdaptationStep

EPOCH_IMAGES = {"source": 47201, "dann": 47201, "improved": 47201, "target": 5833}


def bench_mode(mode: str, steps: int, device: torch.device, warmup: int = 3) -> dict:
    cfg = Config(**{**MODE_DEFAULTS[mode], "mode": mode})
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    ema = EMA(model, cfg.ema_decay) if mode == "improved" else None
    step = AdaptationStep(cfg, model, opt, ema, device, torch.Generator().manual_seed(0))
    b = cfg.batch_size
    x = torch.randint(0, 256, (b, 3, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (b,))
    xu = x.flip(0) if mode in ("dann", "improved") else None
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        step(x, y, xu, i / (warmup + steps), i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    per_step = b * (2 if xu is not None else 1)
    epoch_steps = EPOCH_IMAGES[mode] // b
    return {"mode": mode, "steps_per_s": round(1 / dt, 2), "train_img_per_s": round(per_step / dt, 1),
            "epoch_s": round(epoch_steps * dt, 1), "default_steps": cfg.max_steps,
            "est_training_min": round(cfg.max_steps * dt / 60, 1)}


@torch.no_grad()
def bench_inference(device: torch.device, n: int = 4096) -> float:
    model = build_model(Config()).to(device).eval()
    x = torch.randint(0, 256, (n, 3, 28, 28), dtype=torch.uint8)
    predict_labels(model, x[:256], device)
    t0 = time.perf_counter()
    predict_labels(model, x, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--n-infer", type=int, default=4096, help="images for the inference timing")
    ap.add_argument("--modes", nargs="+", default=["source", "dann", "improved", "target"])
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rows = [bench_mode(m, args.steps, device) for m in args.modes]
    inf = bench_inference(device, args.n_infer)
    print(f"device: {device} ({torch.get_num_threads()} CPU threads), batch {Config().batch_size}")
    print("| mode | steps/s | train img/s | epoch (s) | default steps | est. training (min) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['steps_per_s']} | {r['train_img_per_s']} | {r['epoch_s']} | "
              f"{r['default_steps']} | {r['est_training_min']} |")
    print(f"inference: {inf:.0f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "threads": torch.get_num_threads(),
                                               "train": rows, "inference_img_per_s": round(inf, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    cli_main(main)
