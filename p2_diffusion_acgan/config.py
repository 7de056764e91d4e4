"""Run configurations of problem 2 and the builders that turn a saved config back into networks.

A checkpoint's ``config`` (``dataclasses.asdict`` of one of these) is all inference needs to rebuild
the model: ``build_from_checkpoint(ckpt)``.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from common.cli import config_from_dict
from common.data import NUM_CLASSES
from common.errors import UserError
from common.gan import GANConfig
from common.training import PRECISIONS
from p2_diffusion_acgan.model import ACGANDiscriminator, ACGANGenerator, SAGANDiscriminator, SAGANGenerator, UNet
from p2_diffusion_acgan.schedulers import SAMPLERS, SPACINGS


@dataclass
class DiffusionConfig:
    """Conditional DDPM with classifier-free guidance on MNIST-M (28x28 RGB)."""

    data_root: str = "hw2_data"  # folder holding digits/<domain>/
    domain: str = "mnistm"  # digit domain to learn (its train split)
    max_images: int = 0  # use only the first N training images (0: the whole train split)
    # network (model.UNet)
    base_channels: int = 32  # U-Net channels at full resolution
    channel_mults: tuple = (1, 2, 4)  # channel multiplier of each resolution level (28, 14, 7)
    num_res_blocks: int = 1  # residual blocks per level
    attn_levels: tuple = (2,)  # levels (0 = 28x28) with self-attention; -1 for none
    dropout: float = 0.1  # dropout inside the residual blocks
    # diffusion
    timesteps: int = 1000  # diffusion steps T of the forward process
    schedule: str = "linear"  # noise schedule beta_t: linear (DDPM) | cosine (improved DDPM)
    p_uncond: float = 0.1  # condition dropout for classifier-free guidance
    # optimisation
    batch_size: int = 128  # images per step (per process)
    lr: float = 2e-4  # AdamW learning rate after warm-up
    warmup_steps: int = 500  # steps of linear learning-rate warm-up
    grad_clip: float = 1.0  # gradient-norm clipping threshold
    ema_decay: float = 0.9995  # EMA decay of the weights that are sampled from and shipped
    max_steps: int = 40000  # total training steps
    init_from: str = ""  # start a NEW run from a shipped/model.pt's (EMA) weights, e.g. to go on training on the CPU
    seed: int = 0  # seed of weights, batch order and noise
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 is fastest on a busy 2-core CPU
    precision: str = "auto"  # training precision: auto (bf16 where native or supported, else fp16 on CUDA, fp32 on a CPU) | fp32 | bf16 | fp16
    channels_last: bool = True  # channels_last memory format (1.7x faster training of this U-Net on a CPU)
    # logging / checkpoints
    log_every: int = 50  # steps between rows of metrics.jsonl
    save_every_min: float = 5.0  # minutes between atomic last.pt saves
    sample_every: int = 2000  # 10x10 grid of EMA samples every N steps (0: off)
    eval_every: int = 0  # course-classifier accuracy of 1000 EMA samples every N steps (0: off)
    # sampling defaults used by inference.py (overridable there)
    sampler: str = "dpm++2m"  # sampler of the grids and the default of hw2_2.sh: unipc | dpm++2m | ddim | ddpm | unipc3
    sample_steps: int = 20  # sampler steps
    guidance: float = 2.0  # classifier-free guidance weight w (0: conditional only)
    guidance_interval: tuple = (0, 999)  # apply guidance only at timesteps lo..hi (0-based)
    guide: str = ""  # autoguidance: a smaller, shorter-trained diffusion checkpoint (path, or a name in checkpoints/) ('': none)
    guide_weight: float = 0.0  # weight w_g of the autoguidance term w_g (eps_c - eps_guide) (0: off)
    spacing: str = "logsnr"  # timesteps the sampler visits: logsnr (uniform in log SNR) | trailing (uniform in t)
    sample_precision: str = "auto"  # U-Net forward passes when sampling: auto (CUDA fp16, CPU bf16 where native, else fp32) | fp32 | bf16 | fp16

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.spacing not in SPACINGS:
            raise UserError(f"unknown timestep spacing {self.spacing!r}; choose one of {', '.join(SPACINGS)}")
        for name in ("precision", "sample_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise UserError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(PRECISIONS)}")
        if self.schedule not in ("linear", "cosine"):
            raise UserError(f"unknown schedule {self.schedule!r} (linear or cosine)")
        if not 0 <= self.p_uncond < 1:
            raise UserError(f"p_uncond must be in [0, 1), got {self.p_uncond}")


@dataclass
class P2GANConfig(GANConfig):
    """Problem-2 fields on top of the shared loop's ``GANConfig``."""

    arch: str = "acgan"  # acgan | sagan (saved with every checkpoint: inference rebuilds G from it)
    data_root: str = "hw2_data"  # folder holding digits/<domain>/
    domain: str = "mnistm"  # digit domain to learn (its train split)
    max_images: int = 0  # use only the first N training images (0: the whole train split)
    g_channels: int = 64  # generator width
    d_channels: int = 64  # discriminator width
    d_projection: bool = False  # sagan: add a projection term to D (Miyato & Koyama 2018)
    d_head_blind: bool = False  # sagan with aux_weight > 0: D's class head reads the image with the condition zeroed
    g_cond_bn: bool = False  # acgan: class-conditional BatchNorm in G (the label acts at every resolution)
    conditional: bool = True  # class labels flow from the batch to G (and D)
    num_classes: int = NUM_CLASSES  # digit classes
    n_samples: int = 100  # images in each sample grid (10x10, rows = digits 0-9)
    sample_every: int = 1000  # steps between sample grids of fixed noise in samples/ (0: off)
    max_steps: int = 20000  # total training steps (one step = one pass over the phase list)
    ema_decay: float = 0.999  # EMA decay of G's weights, used for samples, evaluation and export (0: no EMA)


@dataclass
class ACGANConfig(P2GANConfig):
    """ACGAN (Odena et al. 2017): D(x) -> (real/fake, class); class loss on real and fake."""

    arch: str = "acgan"
    loss: str = "bce"
    aux_weight: float = 1.0
    cond_in_d: bool = False


@dataclass
class SAGANConfig(P2GANConfig):
    """SAGAN-style cGAN (report 004; Zhang et al. 2019): spectral norm, self-attention, condition
    concatenated in G and D, two G steps per D step, TTUR (lr_g 1e-4, lr_d 4e-4), hinge loss."""

    arch: str = "sagan"
    loss: str = "hinge"
    cond_in_d: bool = True
    phases: str = "D,G,G"
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9


def gan_config_class(model: str) -> type[P2GANConfig]:
    try:
        return {"acgan": ACGANConfig, "sagan": SAGANConfig}[model]
    except KeyError:
        raise UserError(f"unknown GAN model {model!r} (acgan or sagan)") from None


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


def diffusion_config(d: dict) -> DiffusionConfig:
    """A saved DiffusionConfig dict back as a config. Saved before ``spacing`` existed: it samples as it
    always did (trailing). Saved when ``precision`` meant the sampling precision and ``amp`` (bool) the
    CUDA training precision: both carry over to ``sample_precision`` and ``precision``."""
    d = {"spacing": "trailing", **d}
    if "amp" in d and "sample_precision" not in d:
        d["sample_precision"] = d.pop("precision", "auto")
        d["precision"] = "auto" if d.pop("amp") else "fp32"
    return config_from_dict(DiffusionConfig, d)


def diffusion_config_from(ckpt: dict) -> DiffusionConfig:
    """The checkpoint's DiffusionConfig (``diffusion_config``)."""
    return diffusion_config(ckpt["config"])
