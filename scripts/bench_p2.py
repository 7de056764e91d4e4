"""Problem-2 speed/quality table: training images/s per model, hw2_2.sh time for 1000 images per
sampler, step count and timestep spacing, and the course-classifier accuracy at each setting.

    python scripts/bench_p2.py                   # short: per-step timings, hw2_2 times extrapolated
    python scripts/bench_p2.py --full            # generate all 1000 images for every setting (+ accuracy)
    python scripts/bench_p2.py --settings ddim:25 dpm++2m:10 dpm++2m:8:trailing --device cuda
    python scripts/bench_p2.py --settings unipc:12 --precision fp32 bf16 --full --fid

Every diffusion setting is timed at each ``--precision`` of the U-Net's forward passes (default: fp32
and ``auto``, which is bf16 on a CPU with native bf16, fp16 on CUDA; listed once where they agree).

Networks come from checkpoints/p2_<model>.pt when present (their config), else the default
configs (untrained: timings only, accuracy 'n/a'). Without --full, a diffusion setting's time is
(measured seconds per guided step on 1000 images) x steps + measured PNG writing, marked 'est.';
accuracy needs real weights and the course classifier, and is measured with --full (or on CUDA).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import torch

from common.data import save_pngs
from common.cli import add_deprecated
from common.errors import UserError, cli_main
from common.gan import GANLoss
from common.training import (PRECISIONS, count_params, inference_autocast, load_checkpoint, pick_device,
                             resolve_precision)
from p2_diffusion_acgan.config import DiffusionConfig, build_unet, gan_config_class
from p2_diffusion_acgan.diffusion import diffusion_loss, guided_eps
from p2_diffusion_acgan.gans import build_gan
from p2_diffusion_acgan.inference import CHECKPOINT_DIR, Generator, digit_labels_and_names, generate_all
from p2_diffusion_acgan.schedulers import SAMPLERS, SPACINGS, NoiseSchedule

DEFAULT_SETTINGS = ("ddpm:1000", "ddim:50", "ddim:25", "dpm++2m:20", "dpm++2m:10", "dpm++2m:8", "dpm++2m:8:trailing",
                    "dpm++2m:6", "unipc:12", "unipc:10", "unipc:8")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, dev: torch.device, reps: int) -> float:
    """Seconds per call of fn (one warm-up call first)."""
    fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / reps


def train_speed(model: str, dev: torch.device, batch: int, steps: int) -> tuple[float, int]:
    """(training images/s, parameters) of one model on random data (what the loop does per step)."""
    x = torch.rand(batch, 3, 28, 28, device=dev) * 2 - 1
    y = torch.randint(0, 10, (batch,), device=dev)
    if model == "diffusion":
        net = build_unet(DiffusionConfig()).to(dev).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        sch = NoiseSchedule(1000)
        cuda = dev.type == "cuda"

        def step():
            with torch.autocast(dev.type, dtype=torch.float16, enabled=cuda):
                loss = diffusion_loss(net, sch, x, y, 0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return batch / _timed(step, dev, steps), count_params(net)
    cfg = gan_config_class(model)()
    G, D = build_gan(cfg)
    G, D = G.to(dev).train(), D.to(dev).train()
    loss = GANLoss(G, D, cfg)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-4), torch.optim.Adam(D.parameters(), 1e-4)
    phases = [p.strip() for p in cfg.phases.split(",")]

    def step():
        for ph in phases:
            opt = opt_d if ph == "D" else opt_g
            opt.zero_grad()
            loss.accumulate_gradients(ph, x, y)
            opt.step()
    n_real = batch * phases.count("D")  # real images consumed per step, as common.gan counts them
    return n_real / _timed(step, dev, steps), count_params(G) + count_params(D)


def load_or_default(model: str, dev: torch.device, ckpt_dir: Path = CHECKPOINT_DIR
                    ) -> tuple[Generator | None, torch.nn.Module, bool]:
    """(Generator of the shipped checkpoint or None, network for timing, is_trained)."""
    path = Path(ckpt_dir) / f"p2_{model}.pt"
    if path.is_file():
        gen = Generator(load_checkpoint(path), dev)
        return gen, gen.net, True
    if model == "diffusion":
        return None, build_unet(DiffusionConfig()).to(dev).eval(), False
    return None, build_gan(gan_config_class(model)())[0].to(dev).eval(), False


def png_seconds(tmp: Path) -> float:
    x = torch.rand(1000, 3, 28, 28) * 2 - 1
    _, names = digit_labels_and_names()
    t0 = time.perf_counter()
    save_pngs(x, names, tmp)
    return time.perf_counter() - t0


def accuracy(x: torch.Tensor, y: torch.Tensor) -> str:
    try:
        from p2_diffusion_acgan.evaluate import classifier_accuracy
        r = classifier_accuracy(x, y)
    except UserError as e:  # no classifier weights here
        return f"n/a ({str(e)[:40]})"
    return f"{100 * r['accuracy']:.1f} % (worst {r['worst_digit']}: {100 * r['worst_digit_acc']:.0f} %)"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=2, help="timed training steps per model (after 1 warm-up)")
    p.add_argument("--probe-batch", type=int, default=200, help="images per timed guided step (scaled to 1000)")
    p.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                   help="sampler:steps[:spacing] (spacing: trailing | logsnr; default the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's (2.0 untrained)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32", "auto"],
                   help="U-Net forward-pass precisions to time each diffusion setting at (default: fp32 auto)")
    p.add_argument("--full", action="store_true", help="generate the 1000 images for every setting (+ accuracy)")
    p.add_argument("--fid", action="store_true", help="also FID vs mnistm val of every generated set (slow on a CPU)")
    p.add_argument("--data", dest="data_root", default="hw2_data", help="for the FID reference (mnistm val) (default: hw2_data)")
    add_deprecated(p, "--data-root", "--data", "data_root")
    p.add_argument("--out", default="/tmp/bench_p2")
    p.add_argument("--checkpoints", default=str(CHECKPOINT_DIR), help="folder with p2_<model>.pt")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    settings = []
    for s in args.settings:
        name, _, rest = s.partition(":")
        n, _, spacing = rest.partition(":")
        if name not in SAMPLERS or not n.isdigit() or (spacing and spacing not in SPACINGS):
            raise UserError(f"bad setting {s!r}: use sampler:steps[:spacing] with sampler in {', '.join(SAMPLERS)} "
                            f"and spacing in {', '.join(SPACINGS)}")
        settings.append((name, int(n), spacing or None))
    precisions = list(dict.fromkeys(resolve_precision(p, dev) for p in args.precision))  # fp32 auto -> fp32 bf16
    bs = 1000 if dev.type == "cuda" else 250  # as hw2_2.sh
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# bench_p2 on {dev_name}, torch {torch.__version__}\n")

    print("## training speed (random data, default configs)\n")
    print("| model | parameters (G+D) | batch | train images/s |\n|---|---|---|---|")
    for m in ("diffusion", "acgan", "sagan"):
        ips, n = train_speed(m, dev, args.train_batch, args.train_steps)
        print(f"| {m} | {n / 1e6:.2f}M | {args.train_batch} | {ips:.0f} |", flush=True)

    png_s = png_seconds(Path(args.out) / "png_probe")
    print(f"\n## hw2_2.sh: 1000 images (PNG writing {png_s:.1f} s included)\n")
    print("| model | sampler | steps | spacing | precision | guidance | seconds for 1000 | accuracy | FID vs val |\n"
          "|---|---|---|---|---|---|---|---|---|")

    def fid(x) -> str:
        if not args.fid:
            return "n/a (--fid)"
        from p2_diffusion_acgan.evaluate import fid_vs_val
        return f"{fid_vs_val(x, args.data_root, fast=True):.2f}"
    y_all, _ = digit_labels_and_names()
    for m in ("acgan", "sagan"):
        gen, net, trained = load_or_default(m, dev, args.checkpoints)
        if gen is None:
            z = torch.randn(1000, net.z_dim, device=dev)
            with torch.no_grad():
                secs = _timed(lambda: net(z, y_all.to(dev)), dev, 1) + png_s
            print(f"| {m} | - | 1 | - | fp32 | - | {secs:.1f} | n/a (untrained) | n/a (untrained) |", flush=True)
            continue
        k_default = gen.gan_options()[1]  # > 1: D's class head ranks k noises per image
        for k in sorted({1, k_default}):  # a GAN makes 1000 images in seconds: always measured
            t0 = time.perf_counter()
            x, y, _ = generate_all(gen, batch_size=bs, progress=False, candidates=k)
            secs = time.perf_counter() - t0 + png_s
            sampler = "-" if k == 1 else f"best of {k} by D's class head"
            print(f"| {m} | {sampler} | 1 | - | fp32 | - | {secs:.1f} | {accuracy(x, y)} | {fid(x)} |", flush=True)

    gen, net, trained = load_or_default("diffusion", dev, args.checkpoints)
    w = args.guidance if args.guidance is not None else (gen.diff_cfg.guidance if gen else 2.0)
    own_spacing = gen.diff_cfg.spacing if gen else DiffusionConfig().spacing
    probe = min(args.probe_batch, 1000)
    xb = torch.randn(probe, 3, 28, 28, device=dev)
    yb = y_all[:probe].to(dev)

    def one_step(precision: str):
        with torch.no_grad(), inference_autocast(precision, dev):
            guided_eps(net, xb, 500, yb, w)
    step_s = {pr: _timed(lambda: one_step(pr), dev, 1) * (1000 / probe) for pr in precisions}
    for name, n, spacing in settings:
        spacing = spacing or own_spacing
        for pr in precisions:
            if gen is not None and (args.full or dev.type == "cuda"):
                t0 = time.perf_counter()
                x, y, _ = generate_all(gen, batch_size=bs, sampler=name, steps=n, guidance=w, spacing=spacing,
                                       precision=pr, progress=False)
                secs, acc, f = f"{time.perf_counter() - t0 + png_s:.1f}", accuracy(x, y), fid(x)
            else:
                secs = f"{step_s[pr] * n + png_s:.1f} (est.)"
                acc = f = "n/a (untrained)" if not trained else "n/a (use --full)"
            print(f"| diffusion | {name} | {n} | {spacing} | {pr} | {w:g} | {secs} | {acc} | {f} |", flush=True)
    steps = ", ".join(f"{pr} {t:.2f} s" for pr, t in step_s.items())
    print(f"\n(diffusion network {'from checkpoints/p2_diffusion.pt' if trained else 'of the default config, untrained'}: "
          f"{count_params(net) / 1e6:.2f}M parameters; one guided step on 1000 images: {steps})")
    return 0


if __name__ == "__main__":
    cli_main(main)
