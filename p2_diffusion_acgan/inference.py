"""Write 1000 class-conditional digits: ``bash hw2_2.sh OUT [options]``.

    OUT/{digit}_{idx:03d}.png   digit 0-9, idx 001-100, 28x28 RGB, fixed seed (deterministic)

Default model: the best shipped checkpoint in checkpoints/ (p2_diffusion.pt, p2_sagan.pt,
p2_acgan.pt; the highest ``accuracy`` in the JSON beside each, diffusion first on ties).
``--model`` picks one; ``--checkpoint`` any checkpoint written by p2_diffusion_acgan.train
(``runs/<name>/model.pt`` or ``last.pt``). Diffusion options default to the values saved in the
checkpoint's config: ``--sampler``, ``--steps``, ``--guidance``, ``--spacing``, ``--precision``. GAN options (``--truncation``,
``--candidates``, ``--accept-prob``) likewise default to the checkpoint's, else off.
"""
from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch

from common.checkpoint import CHECKPOINT_DIR
from common.cli import add_device_args, apply_threads, command_parser
from common.data import NUM_CLASSES, check_output_dir, save_pngs, staged_output_dir
from common.errors import UserError, cli_main
from common.training import PRECISIONS, float_state_dict, load_checkpoint, pick_device, resolve_precision
from p2_diffusion_acgan.config import build_discriminator, build_generator, build_unet, diffusion_config_from
from p2_diffusion_acgan.diffusion import sample
from p2_diffusion_acgan.model import SAGANDiscriminator
from p2_diffusion_acgan.schedulers import SAMPLERS, SPACINGS, NoiseSchedule, make_sampler, per_image_generators, randn

MODELS = ("diffusion", "sagan", "acgan")  # preference order on ties
PER_DIGIT = 100


def train_hint(model: str) -> str:
    return (f"train it with: python -m p2_diffusion_acgan.train --model {model} && "
            f"cp runs/p2_{model}/model.pt checkpoints/p2_{model}.pt")


def default_checkpoint(model: str | None, ckpt_dir: Path = CHECKPOINT_DIR) -> tuple[Path, str]:
    """(path, hint) of ``checkpoints/p2_<model>.pt``; without a model, the best one present."""
    if model is not None:
        return ckpt_dir / f"p2_{model}.pt", train_hint(model)
    present = [m for m in MODELS if (ckpt_dir / f"p2_{m}.pt").is_file()]
    if not present:
        raise UserError(f"no trained problem-2 weights in {ckpt_dir} (p2_diffusion.pt / p2_sagan.pt / p2_acgan.pt); "
                        f"{train_hint('diffusion')} (or pass --checkpoint PATH)")

    def accuracy(m: str) -> float:
        try:
            info = json.loads((ckpt_dir / f"p2_{m}.json").read_text())
            return float(info.get("accuracy", (info.get("metrics") or {}).get("accuracy", -1)))
        except (OSError, ValueError, TypeError, AttributeError):
            return -1.0

    best = max(present, key=lambda m: (accuracy(m), -MODELS.index(m)))
    return ckpt_dir / f"p2_{best}.pt", train_hint(best)


class Generator:
    """A loaded problem-2 generator: ``kind`` ('p2_diffusion' | 'p2_acgan' | 'p2_sagan'), ``net``
    (eval mode), ``config`` (dict) and ``generate(y, gens, **opts) -> (B, 3, 28, 28)`` in [-1, 1]."""

    def __init__(self, ckpt: dict, device: torch.device | str = "cpu"):
        kind = ckpt.get("kind")
        weights = ckpt.get("model")
        if kind == "p2_diffusion_train":  # a full training state: sample with its EMA weights
            kind, weights = "p2_diffusion", ckpt["ema"]["module"]
        arch = ckpt["config"].get("arch") if isinstance(ckpt.get("config"), dict) else None
        if kind is None and arch in ("acgan", "sagan"):  # the shared GAN loop's last/best.pt or export
            from common.checkpoint import generator_state_dict
            kind, weights = f"p2_{arch}", generator_state_dict(ckpt)
        if kind not in ("p2_diffusion", "p2_acgan", "p2_sagan") or weights is None or "config" not in ckpt:
            raise UserError(f"not a problem-2 generator checkpoint (kind {kind!r})")
        self.kind, self.config, self.device = kind, ckpt["config"], torch.device(device)
        if kind == "p2_diffusion":
            self.diff_cfg = diffusion_config_from(ckpt)
            net = build_unet(self.diff_cfg)
        else:
            net = build_generator(kind, self.config)
        net.load_state_dict(float_state_dict(weights))
        # channels_last: the U-Net samples with ~23 % less CPU time on a 2-core CPU, same values
        fmt = torch.channels_last if kind == "p2_diffusion" else torch.preserve_format
        self.net = net.to(self.device, memory_format=fmt).eval().requires_grad_(False)
        self.critic = None  # GANs: the trained D, where the file has one, ranks candidates by its class head
        if kind != "p2_diffusion" and isinstance(ckpt.get("D"), dict):
            critic = build_discriminator(kind, self.config)
            critic.load_state_dict(float_state_dict(ckpt["D"]))
            self.critic = critic.to(self.device).eval().requires_grad_(False)

    def guide_net(self, name: str) -> torch.nn.Module | None:
        """The autoguidance network ``name`` refers to (a path, or a file name in checkpoints/), loaded
        once and placed like the main network; None for '' or 'none'."""
        if name in ("", "none"):
            return None
        if getattr(self, "_guide", (None, None))[0] != name:
            path = Path(name) if Path(name).is_file() or Path(name).is_absolute() else CHECKPOINT_DIR / name
            g = Generator(load_checkpoint(path, "an autoguidance checkpoint: a (smaller) p2_diffusion model"),
                          self.device)
            if g.kind != "p2_diffusion":
                raise UserError(f"{path} is a {g.kind} checkpoint; autoguidance needs a p2_diffusion model")
            if (g.diff_cfg.timesteps, g.diff_cfg.schedule) != (self.diff_cfg.timesteps, self.diff_cfg.schedule):
                raise UserError(f"{path}: its noise schedule differs from the main model's")
            self._guide = (name, g.net)
        return self._guide[1]

    @property
    def model_name(self) -> str:
        return self.kind.removeprefix("p2_")

    def diffusion_options(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                          spacing: str | None = None, guidance_interval: tuple[int, int] | None = None,
                          precision: str | None = None, guide: str | None = None,
                          guide_weight: float | None = None) -> dict:
        """The diffusion sampling settings: each option given, else the checkpoint config's."""
        c = self.diff_cfg
        return {"sampler": sampler or c.sampler, "steps": steps or c.sample_steps,
                "guidance": c.guidance if guidance is None else guidance, "spacing": spacing or c.spacing,
                "guidance_interval": tuple(guidance_interval or c.guidance_interval),
                "precision": precision or c.sample_precision, "guide": c.guide if guide is None else guide,
                "guide_weight": c.guide_weight if guide_weight is None else guide_weight}

    def gan_options(self, truncation: float | None = None, candidates: int | None = None,
                    accept_prob: float | None = None) -> tuple[float, int, float]:
        """(truncation, candidates, accept_prob) a GAN samples with: each given value, else the
        checkpoint config's, else 1 (checked)."""
        psi = float(self.config.get("truncation", 1.0)) if truncation is None else truncation
        k = int(self.config.get("candidates", 1)) if candidates is None else candidates
        accept = float(self.config.get("accept_prob", 1.0)) if accept_prob is None else accept_prob
        check_gan_options(psi, k, accept)
        return psi, k, accept

    @torch.no_grad()
    def generate(self, y: torch.Tensor, generators: list[torch.Generator], sampler: str | None = None,
                 steps: int | None = None, guidance: float | None = None, callback=None,
                 guidance_interval: tuple[int, int] | None = None, spacing: str | None = None, truncation: float | None = None,
                 candidates: int | None = None, accept_prob: float | None = None,
                 precision: str | None = None, guide: str | None = None,
                 guide_weight: float | None = None) -> torch.Tensor:
        """Images for labels y (B,), image i drawn from ``generators[i]`` (batch-independent).

        GANs: ``truncation`` psi scales the noise z (psi < 1 trades variety for fidelity).
        ``candidates`` K > 1 draws K noises per image (the first is the K = 1 noise) and keeps the
        first whose class probability under D's class head reaches ``accept_prob``, else the most
        probable one (``accept_prob`` 1: always the most probable). Rejection sampling with the model's
        own discriminator; needs a checkpoint that keeps D. Defaults: the checkpoint config's values,
        else psi 1, K 1, accept_prob 1. Diffusion: ``guide`` names an autoguidance checkpoint ('none'
        or '': none) and ``guide_weight`` its weight (defaults: the config's)."""
        if self.kind == "p2_diffusion":
            o = self.diffusion_options(sampler=sampler, steps=steps, guidance=guidance, spacing=spacing,
                                       guidance_interval=guidance_interval, precision=precision, guide=guide,
                                       guide_weight=guide_weight)
            smp = make_sampler(o["sampler"], NoiseSchedule(self.diff_cfg.timesteps, self.diff_cfg.schedule), o["spacing"])
            return sample(self.net, smp, y, o["guidance"], o["steps"], generators, callback=callback,
                          guidance_interval=o["guidance_interval"], precision=o["precision"],
                          guide=self.guide_net(o["guide"]), guide_weight=o["guide_weight"]).cpu()
        psi, k, accept = self.gan_options(truncation, candidates, accept_prob)
        xs, scores = self.draw_candidates(y, generators, k, psi)
        if k == 1:
            return xs[0].cpu()
        idx = pick_candidates(scores, accept)
        return xs[idx, torch.arange(len(y), device=self.device)].cpu()

    @torch.no_grad()
    def draw_candidates(self, y: torch.Tensor, generators: list[torch.Generator], k: int,
                        truncation: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GANs: K images per label (K, B, 3, 28, 28) on the device, candidate 0 being the plain one,
        and their class log-probabilities under D's class head (K, B) (None for K = 1)."""
        if k > 1 and self.critic is None:
            raise UserError(f"candidates {k} needs the discriminator, and this checkpoint keeps none "
                            "(ship it with scripts/ship_checkpoint.py --discriminator RUN/last.pt)")
        yd = y.to(self.device)
        xs, scores = [], []
        for _ in range(k):  # each call draws the next z_dim numbers from every image's generator
            z = randn((len(y), self.net.z_dim), generators, self.device) * truncation
            xs.append(self.net(z, yd).float().clamp(-1, 1))
            if k > 1:
                scores.append(class_log_prob(self.critic, xs[-1], yd))
        return torch.stack(xs), (torch.stack(scores) if k > 1 else None)


def describe(gen: Generator, opts: dict) -> str:
    """The settings a run samples with, in words (the options given, else the checkpoint's)."""
    if gen.kind != "p2_diffusion":
        psi, k, accept = gen.gan_options(opts.get("truncation"), opts.get("candidates"), opts.get("accept_prob"))
        how = f"first of {k} with p >= {accept:g} by D's class head" if k > 1 and accept < 1 else \
            (f"most probable of {k} by D's class head" if k > 1 else "plain G")
        return f"{gen.model_name}, {how}" + (f", truncation {psi:g}" if psi < 1 else "")
    o = gen.diffusion_options(**{k: v for k, v in opts.items() if k != "callback"})
    lo, hi = o["guidance_interval"]
    auto = o["guide"] not in ("", "none") and o["guide_weight"]
    return (f"diffusion, {o['sampler']} {o['steps']} steps ({o['spacing']}), w {o['guidance']:g}"
            + (f" at t {lo}-{hi}" if (lo, hi) != (0, gen.diff_cfg.timesteps - 1) else "")
            + (f", autoguidance {o['guide_weight']:g} by {o['guide']}" if auto else "")
            + f", {resolve_precision(o['precision'], gen.device)} U-Net passes")


def check_gan_options(truncation: float, candidates: int, accept_prob: float) -> None:
    if not 0 < truncation <= 1:
        raise UserError(f"truncation must be in (0, 1], got {truncation}")
    if candidates < 1:
        raise UserError(f"candidates must be at least 1, got {candidates}")
    if not 0 < accept_prob <= 1:
        raise UserError(f"accept-prob must be in (0, 1], got {accept_prob}")


def class_log_prob(D: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y | x) (B,) under D's class head: the ACGAN D takes x alone, the SAGAN D (x, y)."""
    if isinstance(D, SAGANDiscriminator):
        if D.cls is None:
            raise UserError("this discriminator has no class head (train with --aux-weight > 0) to rank candidates by")
        logits = D.class_logits(x, y)  # a blind head skips the conditional pass
    else:
        logits = D(x)[1]  # the ACGAN D always classifies
    return logits.float().log_softmax(1).gather(1, y[:, None])[:, 0]


def pick_candidates(scores: torch.Tensor, accept_prob: float = 1.0) -> torch.Tensor:
    """Index (B,) into K candidates from their class log-probabilities (K, B): the first candidate with
    p >= accept_prob, else the most probable (ties: the first)."""
    ok = scores >= math.log(accept_prob)
    first_ok = ok.int().argmax(0)  # argmax returns the first maximal index
    return torch.where(ok.any(0), first_ok, scores.argmax(0))


def digit_labels_and_names(per_digit: int = PER_DIGIT) -> tuple[torch.Tensor, list[str]]:
    """Labels (10 * per_digit,) and names ``{digit}_{idx:03d}.png`` (idx from 001)."""
    y = torch.arange(NUM_CLASSES).repeat_interleave(per_digit)
    names = [f"{d}_{i:03d}.png" for d in range(NUM_CLASSES) for i in range(1, per_digit + 1)]
    return y, names


def generate_all(gen: Generator, seed: int = 0, batch_size: int = 1000, per_digit: int = PER_DIGIT,
                 progress: bool = True, **opts) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All 10 * per_digit images (N, 3, 28, 28), labels and file names; fixed per-image seeds."""
    from tqdm import tqdm
    y, names = digit_labels_and_names(per_digit)
    gens = per_image_generators(seed, len(y))
    out = []
    for s in tqdm(range(0, len(y), batch_size), desc=f"sampling ({gen.model_name})", disable=not progress, leave=False):
        out.append(gen.generate(y[s:s + batch_size], gens[s:s + batch_size], **opts))
    return torch.cat(out), y, names


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("hw2_2.sh", __doc__,
                       "bash hw2_2.sh out/digits                                   # diffusion, UniPC 8 steps, w 2",
                       "bash hw2_2.sh out/digits20 --steps 20 --guidance 1.5 --precision fp32",
                       "bash hw2_2.sh out/acgan --model acgan --candidates 1         # the ACGAN's plain generator")
    p.add_argument("out", help="output folder, created if missing")
    p.add_argument("--model", choices=MODELS, default=None, help="which shipped model (default: the best present)")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default checkpoints/p2_<model>.pt)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="diffusion sampler (default: checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="diffusion sampling steps (default: checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance weight w, 0 = conditional only (default: checkpoint's)")
    p.add_argument("--spacing", choices=SPACINGS, default=None,
                   help="diffusion timesteps: trailing (uniform in t) or logsnr (uniform in log SNR) (default: checkpoint's)")
    p.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="apply guidance only at timesteps LO..HI (0-based; default: checkpoint's, all)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="diffusion U-Net forward passes: auto = fp16 on CUDA, bf16 on a CPU that has it natively "
                        "(~1.7x faster than fp32 there), else fp32 (default: checkpoint's, else auto)")
    p.add_argument("--guide", default=None, metavar="PATH",
                   help="diffusion: autoguidance by this smaller diffusion checkpoint (path or a name in checkpoints/; "
                        "'none': off) (default: the checkpoint's)")
    p.add_argument("--guide-weight", type=float, default=None, metavar="WG",
                   help="diffusion: weight of the autoguidance term WG (eps_c - eps_guide); with --guidance 0 it is "
                        "pure autoguidance (default: the checkpoint's)")
    p.add_argument("--truncation", type=float, default=None,
                   help="GANs: scale the noise by psi in (0, 1] (default: the checkpoint's, else 1)")
    p.add_argument("--candidates", type=int, default=None, metavar="K",
                   help="GANs: draw K noises per image and keep one by D's class head (default: the checkpoint's, else 1)")
    p.add_argument("--accept-prob", type=float, default=None, metavar="P",
                   help="GANs with K > 1: keep the first candidate D's class head gives p >= P, else the most probable "
                        "(default: the checkpoint's, else 1: always the most probable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise; the same seed gives the same bytes (default: 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default 1000 on a GPU, 250 on a CPU: fewer page faults; same images)")
    add_device_args(p)
    args = p.parse_args(argv)
    check_output_dir(args.out)  # before any work
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    for flag in ("guidance", "guide_weight", "truncation", "accept_prob"):
        v = getattr(args, flag)
        if v is not None and not math.isfinite(v):
            raise UserError(f"--{flag.replace('_', '-')} must be a finite number, got {v}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_gan_options(1.0 if args.truncation is None else args.truncation, 1 if args.candidates is None else args.candidates,
                      1.0 if args.accept_prob is None else args.accept_prob)
    apply_threads(args.threads)
    if args.checkpoint:
        path, hint = Path(args.checkpoint), ""
    else:
        path, hint = default_checkpoint(args.model)
    gen = Generator(load_checkpoint(path, hint), pick_device(args.device))
    if args.model is not None and gen.model_name != args.model:
        raise UserError(f"{path} holds a {gen.model_name} model, not {args.model}")
    gan_only = [f for f in ("truncation", "candidates", "accept_prob") if getattr(args, f) is not None]
    diffusion_only = [f for f in ("sampler", "steps", "guidance", "spacing", "guidance_interval", "precision", "guide",
                                  "guide_weight")
                      if getattr(args, f) is not None]
    wrong = gan_only if gen.kind == "p2_diffusion" else diffusion_only
    if wrong:
        kind = "GAN" if gen.kind == "p2_diffusion" else "diffusion"
        raise UserError(f"{', '.join('--' + f.replace('_', '-') for f in wrong)}: {kind} sampling options, but "
                        f"{path} holds a {gen.model_name} model")
    if gen.kind == "p2_diffusion" and args.steps is not None and args.steps > gen.diff_cfg.timesteps:
        raise UserError(f"--steps {args.steps} is more than the model's {gen.diff_cfg.timesteps} timesteps")
    t0 = time.time()
    opts = dict(sampler=args.sampler, steps=args.steps, guidance=args.guidance, spacing=args.spacing,
                precision=args.precision, guide=args.guide, guide_weight=args.guide_weight)
    if gen.kind != "p2_diffusion":
        opts = {"truncation": args.truncation, "candidates": args.candidates, "accept_prob": args.accept_prob}
    if args.guidance_interval is not None:
        opts["guidance_interval"] = tuple(args.guidance_interval)
    batch_size = args.batch_size or (1000 if gen.device.type == "cuda" else 250)
    print(f"hw2_2: {describe(gen, opts)}, {path}, seed {args.seed}", flush=True)
    x, _, names = generate_all(gen, args.seed, batch_size, **opts)
    with staged_output_dir(args.out) as stage:  # a killed run leaves no partial output
        save_pngs(x, names, stage)
    print(f"wrote {len(names)} images to {args.out} ({gen.model_name}, {time.time() - t0:.1f} s)")
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
