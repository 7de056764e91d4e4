"""Training speed of every trainer at each precision: images per second of real training steps.

    python scripts/bench_train.py                 # p1 method B, p2 diffusion U-Net, p3 DANN; fp32 and bf16
    python scripts/bench_train.py --quick         # a smoke run: tiny widths, one repeat
    python scripts/bench_train.py --compile       # also torch.compile'd steps (compile time reported apart)

Each trainer's step is the real one (method B: a D phase and a G phase of ``common.gan.GANLoss`` at
batch 64; the U-Net: ``diffusion_loss`` + AdamW at batch 128, channels_last; DANN: the
``AdaptationStep`` at batch 64 + 64 target images) on random data. The settings are interleaved
(fp32, bf16, fp32, bf16, ...) over ``--repeats`` rounds so that a change in the machine's load hits
both alike; the table gives the median images/s and the ratio to fp32. The last two lines name the
CPU (and whether its bf16 is native) and the bf16 speedups.
"""
from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from typing import Callable, Sequence

import torch

from common.cli import command_parser
from common.errors import cli_main
from common.training import TrainPrecision, cpu_has_bf16, pick_device


def _p1_step(prec: TrainPrecision, device: torch.device, quick: bool) -> tuple[Callable[[], None], int]:
    from common.gan import GANLoss
    from p1_gan.config import build_models, method_defaults
    width = 16 if quick else 64
    cfg = dataclasses.replace(method_defaults("B"), ngf=width, ndf=width, device=str(device))
    G, D = build_models(cfg)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G, D = G.to(device, memory_format=mf), D.to(device, memory_format=mf)
    loss = GANLoss(G, D, cfg, prec.autocast, mf)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    real = (torch.rand(cfg.batch_size, 3, 64, 64, device=device) * 2 - 1).contiguous(memory_format=mf)

    def step() -> None:
        for phase, opt in (("D", opt_d), ("G", opt_g)):
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients(phase, real, None, backward=prec.backward)
            prec.step(opt)
            prec.update()
    return step, cfg.batch_size


def _p2_step(prec: TrainPrecision, device: torch.device, quick: bool) -> tuple[Callable[[], None], int]:
    from p2_diffusion_acgan.config import DiffusionConfig, build_unet
    from p2_diffusion_acgan.diffusion import diffusion_loss
    from p2_diffusion_acgan.schedulers import NoiseSchedule
    cfg = DiffusionConfig(base_channels=8 if quick else 32, batch_size=32 if quick else 128)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_unet(cfg).to(device, memory_format=mf).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    schedule, g = NoiseSchedule(cfg.timesteps, cfg.schedule), torch.Generator(device=device).manual_seed(0)
    x0 = (torch.rand(cfg.batch_size, 3, 28, 28, device=device) * 2 - 1).contiguous(memory_format=mf)
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)

    def step() -> None:
        with prec.autocast():
            loss = diffusion_loss(model, schedule, x0, y, cfg.p_uncond, g)
        opt.zero_grad(set_to_none=True)
        prec.backward(loss)
        prec.unscale(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        prec.step(opt)
        prec.update()
    return step, cfg.batch_size


def _p3_step(prec: TrainPrecision, device: torch.device, quick: bool) -> tuple[Callable[[], None], int]:
    from p3_dann.config import MODE_DEFAULTS, Config, build_model
    from p3_dann.train import AdaptationStep
    cfg = Config(**{**MODE_DEFAULTS["dann"], "mode": "dann", "precision": prec.name, "width": 8 if quick else 32})
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fn = AdaptationStep(cfg, model, opt, None, device, torch.Generator().manual_seed(0))
    x = torch.randint(0, 256, (cfg.batch_size, 3, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (cfg.batch_size,))
    return (lambda: fn(x, y, x.flip(0), 0.5, 0)), 2 * cfg.batch_size


TRAINERS = {"p1": ("P1 method B GAN", _p1_step), "p2": ("P2 diffusion U-Net", _p2_step),
            "p3": ("P3 DANN", _p3_step)}


def time_steps(step: Callable[[], None], images: int, n: int, device: torch.device) -> float:
    """Images per second over ``n`` calls of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * images / (time.perf_counter() - t)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("python scripts/bench_train.py", __doc__, "python scripts/bench_train.py",
                       "python scripts/bench_train.py --quick", "python scripts/bench_train.py --trainers p2 --repeats 5")
    p.add_argument("--trainers", nargs="+", choices=list(TRAINERS), default=list(TRAINERS), help="which (default: all)")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16", "fp16"), default=["fp32", "bf16"],
                   help="precisions to time (default: fp32 bf16; fp16 needs CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 5; --quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default: 3; --quick 1)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd steps (compile time apart)")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny widths, few steps, one round")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: 0 = torch's default)")
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    device = pick_device(a.device)
    steps, repeats = a.steps or (2 if a.quick else 5), a.repeats or (1 if a.quick else 3)
    variants = [(t, prec, False) for t in a.trainers for prec in a.precisions]
    if a.compile:
        variants += [(t, prec, True) for t in a.trainers for prec in a.precisions]
    fns, compile_s = {}, {}
    for t, prec, comp in variants:
        torch.manual_seed(0)
        fn, images = TRAINERS[t][1](TrainPrecision(prec, device), device, a.quick)
        if comp:
            fn = torch.compile(fn)
        t0 = time.perf_counter()
        fn()  # warm-up (and the compile, for compiled steps)
        compile_s[(t, prec, comp)] = time.perf_counter() - t0
        fns[(t, prec, comp)] = (fn, images)
    rates: dict[tuple, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            fn, images = fns[v]
            rates[v].append(time_steps(fn, images, steps, device))
    print(f"| trainer | precision | compiled | img/s | vs fp32 |{' first call s |' if a.compile else ''}")
    print(f"|---|---|---|---|---|{'---|' if a.compile else ''}")
    med = {v: statistics.median(r) for v, r in rates.items()}
    for t, prec, comp in variants:
        base = med.get((t, "fp32", False))
        ratio = f"{med[(t, prec, comp)] / base:.2f}x" if base else "-"
        extra = f" {compile_s[(t, prec, comp)]:.1f} |" if a.compile else ""
        print(f"| {TRAINERS[t][0]} | {prec} | {'yes' if comp else 'no'} | {med[(t, prec, comp)]:.1f} | {ratio} |{extra}")
    where = f"CPU {cpu_name()}, {torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    native = cpu_has_bf16() if device.type == "cpu" else torch.cuda.is_bf16_supported()
    print(f"{where}; bf16 {'native' if native else 'emulated (not native)'}; {steps} steps x {repeats} rounds, interleaved")
    if "bf16" in a.precisions and "fp32" in a.precisions:
        print("bf16 speedup: " + ", ".join(f"{t} {med[(t, 'bf16', False)] / med[(t, 'fp32', False)]:.2f}x"
                                           for t in a.trainers))
    return 0


if __name__ == "__main__":
    cli_main(main)
