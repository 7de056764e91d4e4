"""ACGAN and the SAGAN-style cGAN on MNIST-M, trained by the shared GAN loop (``common.gan.train_gan``).

This module only builds the networks (configs: config.py) and the data, and exports the generator;
the loop itself (phases, losses, EMA, resume, checkpoints) is common/gan.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import export_generator
from common.data import TensorBatches
from common.errors import UserError
from common.gan import train_gan as shared_train_gan
from common.training import seed_everything
from p2_diffusion_acgan.config import P2GANConfig, build_discriminator, build_generator
from p2_diffusion_acgan.data import grid_labels, load_train_data


def build_gan(cfg: P2GANConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for ``cfg.arch`` (the same builders inference uses on a saved config)."""
    if cfg.arch == "acgan" and cfg.d_projection:
        raise UserError("d_projection is a sagan option (the ACGAN D classifies instead)")
    if cfg.arch == "acgan" and cfg.d_head_blind:
        raise UserError("d_head_blind is a sagan option (the ACGAN D never sees the condition)")
    if cfg.arch == "sagan" and cfg.g_cond_bn:
        raise UserError("g_cond_bn is an acgan option (the sagan G takes its condition with z)")
    if cfg.arch not in ("acgan", "sagan"):
        raise UserError(f"unknown GAN arch {cfg.arch!r} (acgan or sagan)")
    d = dataclasses.asdict(cfg)
    return build_generator(f"p2_{cfg.arch}", d), build_discriminator(f"p2_{cfg.arch}", d)


def train_gan(model: str, cfg: P2GANConfig, run_dir: str | Path, progress: bool = True) -> dict:
    """Train (or resume) ``acgan`` / ``sagan``; writes run_dir/model.pt (EMA G, fp16) for inference."""
    if cfg.arch != model:
        raise UserError(f"config arch {cfg.arch!r} does not match --model {model}")
    run_dir = Path(run_dir)
    x, y = load_train_data(cfg.data_root, cfg.domain, cfg.max_images, progress)
    seed_everything(cfg.seed)  # the initial weights come from the seed too: two fresh runs are identical
    G, D = build_gan(cfg)
    bs = min(cfg.batch_size, len(x))

    def data(start_step: int):  # reseeded by the step, so a resumed run does not replay the same batches
        return TensorBatches(x, y, batch_size=bs, generator=torch.Generator().manual_seed(cfg.seed * 7919 + start_step))

    eval_fn = None
    if cfg.eval_every > 0:
        from p2_diffusion_acgan.evaluate import gan_eval_fn
        eval_fn = gan_eval_fn
        if not cfg.best_metric:
            cfg = dataclasses.replace(cfg, best_metric="accuracy", best_mode="max")
    fixed = grid_labels(cfg.n_samples // cfg.num_classes, cfg.num_classes) if cfg.n_samples % cfg.num_classes == 0 else None
    res = shared_train_gan(G, D, data, cfg, run_dir, eval_fn=eval_fn, fixed_cond=fixed, progress=progress)
    src = run_dir / "best.pt" if res.get("best") else run_dir / "last.pt"
    export_generator(src, run_dir / "model.pt")
    res["model"] = str(run_dir / "model.pt")
    return res
