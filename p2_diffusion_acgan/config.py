"""Run configurations of problem 2 and the builders that turn a saved config back into networks.

A checkpoint's ``config`` (``dataclasses.asdict`` of one of these) is all inference needs to rebuild
the model: ``build_from_checkpoint(ckpt)``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from common.errors import UserError
from common.training import (PRECISIONS)
from common.cli import config_from_dict

from p2_diffusion_acgan.model import ACGANDiscriminator, ACGANGenerator, SAGANDiscriminator, SAGANGenerator, UNet
from p2_diffusion_acgan.schedulers import SAMPLERS, SPACINGS

NUM_CLASSES = 10


@dataclass
class DiffusionConfig:
    """Conditional DDPM with classifier-free guidance on MNIST-M (28x28 RGB)."""

    data_root: str = "hw2_data"
    domain: str = "mnistm"
    max_images: int = 0  # 0: the whole train split; >0: the first N (smoke runs)
    # network (model.UNet)
    base_channels: int = 32
    channel_mults: tuple = (1, 2, 4)
    num_res_blocks: int = 1
    attn_levels: tuple = (2,)  # levels (0 = 28x28) with self-attention; -1 for none
    dropout: float = 0.1
    # diffusion
    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    p_uncond: float = 0.1  # condition dropout for classifier-free guidance
    # optimisation
    batch_size: int = 128
    lr: float = 2e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    max_steps: int = 40000
    init_from: str = ""  # start a NEW run from a shipped/model.pt's (EMA) weights, e.g. to go on training on the CPU
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is fastest on a busy 2-core CPU
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    # logging / checkpoints
    log_every: int = 50
    save_every_min: float = 5.0
    sample_every: int = 2000  # 10x10 grid of EMA samples every N steps (0: off)
    eval_every: int = 0  # course-classifier accuracy of 1000 EMA samples every N steps (0: off)
    # sampling defaults used by inference.py (overridable there)
    sampler: str = "dpm++2m"
    sample_steps: int = 20
    guidance: float = 2.0
    guidance_interval: tuple = (0, 999)  # apply guidance only at timesteps lo..hi (0-based)
    spacing: str = "logsnr"  # timesteps the sampler visits: logsnr (uniform in log SNR) | trailing (uniform in t)
    precision: str = "auto"  # U-Net forward passes when sampling: auto (CUDA fp16, CPU bf16 where native, else fp32) | fp32 | bf16 | fp16

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.spacing not in SPACINGS:
            raise UserError(f"unknown timestep spacing {self.spacing!r}; choose one of {', '.join(SPACINGS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.schedule not in ("linear", "cosine"):
            raise UserError(f"unknown schedule {self.schedule!r} (linear or cosine)")
        if not 0 <= self.p_uncond < 1:
            raise UserError(f"p_uncond must be in [0, 1), got {self.p_uncond}")


def build_unet(cfg: DiffusionConfig) -> UNet:
    return UNet(in_channels=3, base_channels=cfg.base_channels, channel_mults=tuple(cfg.channel_mults),
                num_res_blocks=cfg.num_res_blocks, attn_levels=tuple(a for a in cfg.attn_levels if a >= 0),
                num_classes=NUM_CLASSES, dropout=cfg.dropout)


def build_generator(kind: str, cfg_dict: dict) -> nn.Module:
    """Generator of a GAN checkpoint (``p2_acgan`` / ``p2_sagan``) from its saved config dict."""
    z_dim, ch = int(cfg_dict.get("z_dim", 100)), int(cfg_dict.get("g_channels", 64))
    if kind == "p2_acgan":
        return ACGANGenerator(z_dim=z_dim, num_classes=NUM_CLASSES, channels=ch,
                              cond_bn=bool(cfg_dict.get("g_cond_bn", False)))
    if kind == "p2_sagan":
        return SAGANGenerator(z_dim=z_dim, num_classes=NUM_CLASSES, channels=ch)
    raise UserError(f"not a problem-2 GAN checkpoint kind: {kind!r}")


def build_discriminator(kind: str, cfg_dict: dict) -> nn.Module:
    """Discriminator of a GAN checkpoint (``p2_acgan`` / ``p2_sagan``) from its saved config dict
    (inference keeps it only to rank candidate images by its class head: ``Generator.generate``)."""
    ch = int(cfg_dict.get("d_channels", 64))
    if kind == "p2_acgan":
        return ACGANDiscriminator(num_classes=NUM_CLASSES, channels=ch)
    if kind == "p2_sagan":
        return SAGANDiscriminator(num_classes=NUM_CLASSES, channels=ch, projection=bool(cfg_dict.get("d_projection", False)),
                                  class_head=float(cfg_dict.get("aux_weight", 0.0)) > 0,
                                  head_blind=bool(cfg_dict.get("d_head_blind", False)))
    raise UserError(f"not a problem-2 GAN checkpoint kind: {kind!r}")


def diffusion_config_from(ckpt: dict) -> DiffusionConfig:
    """The checkpoint's DiffusionConfig; one saved before ``spacing`` existed samples as it always did
    (trailing), whatever the default is now."""
    return config_from_dict(DiffusionConfig, {"spacing": "trailing", **ckpt["config"]})
