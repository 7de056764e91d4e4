"""Report figures of problem 2, from the shipped (or given) checkpoints.

    python scripts/p2_figures.py [--out figures/p2] [--diffusion PATH] [--acgan PATH] [--sagan PATH]
                                 [--sampler ddpm --steps 1000]

Writes into OUT:
  grid_<model>.png          10x10: rows = digits 0-9, columns = different noise (fixed seeds)
  reverse_process.png       six frames of the first "0" (0_001.png's noise) at evenly spaced
                            timesteps t = T ... 0 of the diffusion reverse process
  architecture_<model>.txt  print(model) (GANs: generator and discriminator), rebuilt from the
                            checkpoint's config (or the default config when there is no checkpoint)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch

from common.history import save_figure
from common.cli import config_from_dict
from common.data import save_grid
from common.errors import cli_main
from common.training import count_params, load_checkpoint
from p2_diffusion_acgan.config import DiffusionConfig, build_unet, diffusion_config, gan_config_class
from p2_diffusion_acgan.data import grid_labels
from p2_diffusion_acgan.gans import build_gan
from p2_diffusion_acgan.inference import CHECKPOINT_DIR, MODELS, Generator
from p2_diffusion_acgan.schedulers import SAMPLERS, per_image_generators


def architecture_text(model: str, config: dict | None) -> str:
    """print(model) of the networks rebuilt from a saved config dict (None: the defaults)."""
    src = "checkpoint config" if config else "default config (no checkpoint)"
    if model == "diffusion":
        cfg = diffusion_config(config) if config else DiffusionConfig()
        net = build_unet(cfg)
        return f"# {model} ({src}): {count_params(net):,} parameters\n{net}\n"
    Cfg = gan_config_class(model)
    cfg = config_from_dict(Cfg, config) if config else Cfg()
    G, D = build_gan(cfg)
    return (f"# {model} ({src})\n# generator: {count_params(G):,} parameters\n{G}\n\n"
            f"# discriminator: {count_params(D):,} parameters\n{D}\n")


def reverse_process_figure(gen: Generator, path: Path, sampler: str | None, steps: int | None,
                           guidance: float | None = None, n_frames: int = 6, seed: int = 0) -> list[int]:
    """Six states x_t of the first "0" (image 0 of the seeded run), from pure noise to x_0; returns the t shown."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = gen.diff_cfg
    n = steps or c.sample_steps
    states: list[tuple[int, torch.Tensor]] = []
    visited: list[int] = []  # the timestep indices the sampler steps from (its spacing decides them)
    gens = per_image_generators(seed, 1)

    def keep(i, t, x):  # state after step i: the sampler reached the next visited timestep (or the clean image)
        visited.append(int(t))
        states.append((i + 1, x[0].clamp(-1, 1).cpu()))

    # state 0 = the initial noise x_T: draw it with a copy of the generator the sampler will use
    x_T = torch.randn((3, 28, 28), generator=per_image_generators(seed, 1)[0])
    gen.generate(torch.tensor([0]), gens, sampler=sampler, steps=n, guidance=guidance, callback=keep)
    all_states = [(0, x_T)] + states
    picks = [round(k * n / (n_frames - 1)) for k in range(n_frames)]
    fig, axes = plt.subplots(1, n_frames, figsize=(2 * n_frames, 2.3))
    shown = []
    for ax, k in zip(axes, picks):
        idx, x = all_states[k]
        t_shown = visited[idx] + 1 if idx < n else 0  # the paper's t (1-based); 0 = the clean image
        shown.append(t_shown)
        ax.imshow(((x.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
        ax.set_title(f"t = {t_shown}")
        ax.axis("off")
    fig.suptitle(f'reverse process of the first "0" ({sampler or c.sampler}, {n} steps)')
    save_figure(fig, path)
    return shown


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="figures/p2")
    for m in MODELS:
        p.add_argument(f"--{m}", default=None, help=f"checkpoint (default checkpoints/p2_{m}.pt when present)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="diffusion sampler (default: checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: checkpoint's)")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = 0
    for m in MODELS:
        path = Path(getattr(args, m) or CHECKPOINT_DIR / f"p2_{m}.pt")
        ckpt = load_checkpoint(path) if (getattr(args, m) or path.is_file()) else None
        gen = Generator(ckpt) if ckpt is not None else None
        (out / f"architecture_{m}.txt").write_text(architecture_text(m, gen.config if gen else None))
        if gen is None:
            print(f"{m}: no checkpoint at {path}; wrote the architecture of the default config only")
            continue
        found += 1
        y = grid_labels()
        x = gen.generate(y, per_image_generators(args.seed, len(y)), sampler=args.sampler, steps=args.steps,
                         guidance=args.guidance) if m == "diffusion" else gen.generate(y, per_image_generators(args.seed, len(y)))
        save_grid(x, out / f"grid_{m}.png", nrow=10)
        print(f"{m}: wrote {out / f'grid_{m}.png'}")
        if m == "diffusion":
            ts = reverse_process_figure(gen, out / "reverse_process.png", args.sampler, args.steps,
                                        args.guidance, seed=args.seed)
            print(f"diffusion: wrote {out / 'reverse_process.png'} (t = {ts})")
    if not found:
        print("no problem-2 checkpoints found: train with python -m p2_diffusion_acgan.train --model diffusion")
    return 0


if __name__ == "__main__":
    cli_main(main)
