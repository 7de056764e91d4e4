"""Problem 1 run configuration: the shared GAN loop's settings plus the face models' fields.

``method_defaults("A")`` is the reference DCGAN recipe (report 000: BCE, Adam 2e-4, betas
(0.5, 0.999), batch 128, z 100); ``method_defaults("B")`` the improved one (SN discriminator of SNGAN's standard-CNN shape,
hinge loss, TTUR 2e-4 / 4e-4, DiffAugment color+translation, EMA 0.999 of G, batch 64).
``build_models(cfg)`` / ``build_generator(cfg)`` rebuild the networks from a config alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.cli import config_from_dict
from common.errors import UserError
from common.gan import GANConfig, validate_config
from p1_gan.model import Discriminator, Generator, SNDiscriminator

METHODS = ("A", "B")
EPOCH_IMAGES = 38464  # face/train


@dataclass
class P1Config(GANConfig):
    """``GANConfig`` + problem 1 fields. ``eval_every`` > 0 computes FID of ``fid_n`` images vs face/val."""

    method: str = "B"  # A: reference DCGAN | B: spectral-norm hinge GAN with DiffAugment, EMA and TTUR
    ngf: int = 64  # generator width (channels of its last hidden layer)
    ndf: int = 64  # discriminator width (channels of its first layer)
    d_extra: bool = False  # method B: SNGAN "standard CNN" D (extra 3x3 convs, ~2x D cost)
    d_arch: str = "auto"  # auto (A: dcgan, B: sn) | dcgan (BatchNorm D) | sn (spectral-norm D)
    fid_n: int = 1000  # generated images per FID evaluation (against face/val)


def method_defaults(method: str) -> P1Config:
    """The default recipe of method A (reference DCGAN) or B (improved GAN)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r} (choose A or B)")
    if method == "A":  # report 000 / DCGAN paper; 20 epochs of face/train
        return P1Config(method="A", loss="bce", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, batch_size=128,
                        ema_decay=0.0, diffaug="", max_steps=20 * EPOCH_IMAGES // 128, eval_every=1000,
                        best_metric="fid", sample_every=500)
    # d_extra: B with the plain SN D lost its D (hinge loss ~1.9, FID 48.8 after 25 epochs); with the
    # standard-CNN D, 24 epochs gave FID 33.2 and face score 85 % (checkpoints/p1_methodB.json)
    return P1Config(method="B", loss="hinge", lr_g=2e-4, lr_d=4e-4, beta1=0.5, beta2=0.999, batch_size=64,
                    ema_decay=0.999, diffaug="color,translation", d_extra=True, max_steps=20 * EPOCH_IMAGES // 64,
                    eval_every=2000, best_metric="fid", sample_every=1000)


def check_config(cfg: P1Config) -> None:
    """Problem 1 fields and the shared loop's fields (one-line errors before any data is loaded)."""
    validate_config(cfg)
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r} (choose A or B)")
    if cfg.conditional:
        raise UserError("problem 1 GANs are unconditional (conditional must be false)")
    if cfg.d_arch not in ("auto", "dcgan", "sn"):
        raise UserError(f"unknown d_arch {cfg.d_arch!r} (choose auto, dcgan or sn)")
    for name in ("ngf", "ndf"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def build_generator(cfg: P1Config) -> Generator:
    check_config(cfg)
    return Generator(cfg.z_dim, cfg.ngf)


def build_models(cfg: P1Config):
    """(G, D) of the configured method."""
    G = build_generator(cfg)
    arch = cfg.d_arch if cfg.d_arch != "auto" else ("dcgan" if cfg.method == "A" else "sn")
    D = Discriminator(cfg.ndf) if arch == "dcgan" else SNDiscriminator(cfg.ndf, extra=cfg.d_extra)
    return G, D


def config_from_checkpoint(ck: dict) -> P1Config:
    if "config" not in ck or not isinstance(ck["config"], dict):
        raise UserError("checkpoint has no config (not written by p1_gan.train / export)")
    return config_from_dict(P1Config, ck["config"])
