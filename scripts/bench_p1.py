"""Problem 1 speed: training images/s of methods A and B, and the time to write 1000 faces.

    python scripts/bench_p1.py                      # CPU (or the GPU when present), widths 64 and 32
    python scripts/bench_p1.py --steps 20 --widths 64 --device cuda

Training speed is measured on the real loop (``common.gan.train_gan``, random uint8 images, batch
64): ``img_per_s`` of each step after ``--warmup`` steps (median), real images per second, i.e. one
D step + one G step per batch. Generation: in-process ``generate`` + PNG writing of 1000 images, and
the wall time of ``bash hw2_1.sh`` (Python start-up included) on an untrained checkpoint of the
same shape, and the time of 1000 faces as the best of K candidates by D (``--candidates``; K = 1
is the plain draw). Prints a markdown table and writes it as JSON (``--out``). On a shared CPU the wall-clock
rates depend on the load; the process CPU time per image (all threads, warm-up included) is a
steadier figure: uncontended img/s is roughly threads * 1000 / (CPU ms per image).
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]

import torch

from common.checkpoint import export_state
from common.data import TensorBatches, save_pngs
from common.errors import cli_main
from common.gan import generate, train_gan
from common.training import atomic_write_json, load_checkpoint, pick_device, read_jsonl
from p1_gan.config import build_models, method_defaults


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def bench_train(method: str, width: int, batch: int, steps: int, warmup: int, device: str, tmp: Path) -> dict:
    cfg = dataclasses.replace(method_defaults(method), ngf=width, ndf=width, batch_size=batch,
                              max_steps=warmup + steps, log_every=1, sample_every=0, eval_every=0,
                              save_every=0, save_every_min=1e9, device=device)
    x = (torch.rand(max(4 * batch, 256), 3, 64, 64) * 255).to(torch.uint8)
    run = tmp / f"train_{method}_{width}"
    G, D = build_models(cfg)
    cpu0 = time.process_time()
    train_gan(G, D, TensorBatches(x, batch_size=batch), cfg, run, progress=False)
    cpu_per_img = (time.process_time() - cpu0) / ((warmup + steps) * batch)  # incl. warm-up and set-up
    rates = [r["img_per_s"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"][warmup:]
    return {"img_per_s": statistics.median(rates), "cpu_ms_per_img": 1000 * cpu_per_img,
            "ckpt": str(run / "last.pt"), "cfg": cfg}


def bench_generate(ckpt: Path, tmp: Path, device: str, candidates: Sequence[int] = (1,)) -> dict:
    from p1_gan.inference import generate_best_of, load_models

    G, D, cfg, _ = load_models(ckpt)
    dev = pick_device(device)
    best_of = {}
    for k in candidates:
        t = time.perf_counter()
        generate_best_of(G.to(dev), D.to(dev) if D is not None else None, 1000, cfg.z_dim, k, device=dev)
        best_of[k] = round(time.perf_counter() - t, 2)
    t0 = time.perf_counter()
    x = generate(G.to(dev), 1000, cfg.z_dim, seed=0, device=dev)
    t1 = time.perf_counter()
    save_pngs(x, [f"{i:04d}.png" for i in range(1000)], tmp / "gen_inproc")
    t2 = time.perf_counter()
    r = subprocess.run(["bash", str(REPO / "hw2_1.sh"), str(tmp / "gen_script"), "--checkpoint", str(ckpt),
                        "--device", device], capture_output=True, text=True)
    t3 = time.perf_counter()
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return {"generate_s": t1 - t0, "write_png_s": t2 - t1, "hw2_1_sh_s": t3 - t2, "best_of_s": best_of}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench_p1.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["A", "B"], choices=["A", "B"])
    p.add_argument("--widths", nargs="+", type=int, default=[64, 32], help="ngf = ndf values")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--candidates", nargs="+", type=int, default=[1, 2, 4], help="K of the best-of-K timings")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/bench_p1.json")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for method in args.methods:
            for width in args.widths:
                tr = bench_train(method, width, args.batch_size, args.steps, args.warmup, args.device, tmp)
                ck = tmp / f"g_{method}_{width}.pt"
                export_state(load_checkpoint(tr["ckpt"]), ck, include_d=True)
                gen = bench_generate(ck, tmp, args.device, args.candidates)
                rows.append({"method": method, "width": width, "batch": args.batch_size,
                             "train_img_per_s": round(tr["img_per_s"], 1),
                             "cpu_ms_per_img": round(tr["cpu_ms_per_img"], 1),
                             "epoch_min": round(38464 / tr["img_per_s"] / 60, 1),
                             **{k: round(v, 2) if isinstance(v, float) else v for k, v in gen.items()}})
                print(rows[-1], flush=True)
    info = {"device": device_name(device), "torch": torch.__version__, "rows": rows}
    atomic_write_json(args.out, info)
    print(f"\ndevice: {info['device']} (torch {info['torch']})\n")
    print("| method | ngf=ndf | batch | train img/s | min/epoch (38,464 faces) | process CPU ms/img "
          "| generate 1000 (s) | write PNGs (s) | hw2_1.sh wall (s) | 1000 as best of K by D (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['width']} | {r['batch']} | {r['train_img_per_s']} | {r['epoch_min']} | "
              f"{r['cpu_ms_per_img']} | {r['generate_s']} | {r['write_png_s']} | {r['hw2_1_sh_s']} | "
              + ", ".join(f"K {k}: {v}" for k, v in r["best_of_s"].items()) + " |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    cli_main(main)
