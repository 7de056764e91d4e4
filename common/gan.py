"""The one GAN training loop of the project (problem 1's face GANs and problem 2's ACGAN / cGAN).

Three pieces, as in NVlabs' stylegan2-ada (``loss.accumulate_gradients(phase)`` + a phase list):

``GANConfig`` (dataclass)
    Every setting of the loop. A problem subclasses it to add its model fields
    (``@dataclass class P1Config(GANConfig): ngf: int = 64``), builds it from the CLI with
    ``common.cli.add_config_args`` / ``config_from_args``; the loop saves it as
    ``config.json`` and inside every checkpoint. Main fields:

    - objective: ``loss`` in ``bce`` (non-saturating, Goodfellow et al. 2014), ``hinge``
      (Lim & Ye 2017; SNGAN / SAGAN), ``wgan`` (use with ``gp_weight=10``: WGAN-GP,
      Gulrajani et al. 2017), ``lsgan``; ``gp_weight`` (WGAN-GP), ``r1_gamma`` (R1, Mescheder
      et al. 2018), ``reg_every`` (lazy regularisation: penalty every k-th D step, weight x k);
      ``aux_weight`` (ACGAN class loss, Odena et al. 2017; ``aux_fake_weight`` scales D's class loss on
      fakes, 0 = D's classifier learns from real images only); ``diffaug`` (DiffAugment policy,
      Zhao et al. 2020, e.g. ``"color,translation,cutout"``, applied to real and fake D inputs).
    - schedule: ``phases``, the comma-separated phase list of ONE step, walked in order:
      ``"D,G"`` (default), ``"D,D,D,D,D,G"`` (WGAN n_critic = 5), ``"D,G,G"`` (two G steps per
      D step, as in report 004). Every ``D`` phase draws a new real batch.
    - conditioning: ``conditional`` (condition vectors flow from the batch to G and D),
      ``cond_in_d`` (D is called ``D(x, c)``: projection / concatenation discriminators; else
      ``D(x)``), ``num_classes`` (for the default fixed grid conditions).
    - optimisation: ``batch_size``, ``z_dim``, ``lr_g``/``lr_d`` (TTUR, Heusel et al. 2017),
      ``beta1``/``beta2`` (Adam), ``ema_decay`` (0 = no EMA of G), ``ema_bn_stats`` (recompute
      the EMA generator's BatchNorm statistics from its own outputs before it is used or saved),
      ``max_steps``.
    - bookkeeping: ``seed``, ``device``, ``precision`` (auto|fp32|bf16|fp16, ``TrainPrecision``),
      ``channels_last``, ``log_every``, ``sample_every``, ``n_samples``, ``eval_every``,
      ``best_metric``/``best_mode``, ``save_every`` (steps) and ``save_every_min``.

``GANLoss(G, D, cfg)``
    ``accumulate_gradients(phase, real, cond, reg=False, backward=...) -> {name: detached tensor}``:
    ``phase`` is ``"D"`` or ``"G"``. It draws z, runs G and D, computes the adversarial loss
    (plus the ACGAN term and, in a D phase with ``reg``, the gradient penalty / R1) and calls
    ``backward(loss)``; the loop zeroes grads before and steps the optimiser after.

``train_gan(G, D, data, cfg, run_dir, eval_fn=None, fixed_cond=None) -> dict``
    The loop: phase list, TTUR Adam, EMA of G, AMP on CUDA, channels_last (``cfg.channels_last``,
    any device: it is faster on this CPU too), tqdm with losses,
    ``metrics.jsonl``, a sample grid from FIXED noise every ``sample_every`` steps (eval mode,
    EMA weights; ``fixed_cond`` (n_samples, ...) gives its conditions, default
    ``arange(n_samples) % num_classes`` drawn with ``num_classes`` columns; the same conditions feed
    ``ema_bn_stats``), ``eval_fn(G_eval, step) -> {name: float}`` every ``eval_every`` steps (FID on a
    subset for faces, digit accuracy for problem 2; ``best.pt`` keeps the best by
    ``best_metric``), resume from ``run_dir/last.pt`` when the same command is rerun (G, D, EMA,
    both optimisers, GradScaler, step, RNG), atomic checkpoints every ``save_every`` steps /
    ``save_every_min`` minutes and on SIGTERM/SIGINT, NaN/inf loss -> ``NonFiniteLoss`` (one-line
    message, the last good checkpoint is kept).

Model contract
    ``G(z)`` or, when ``cfg.conditional``, ``G(z, c)``: z (N, z_dim) -> images (N, C, H, W) in
    [-1, 1]. ``D(x)`` or, with ``cfg.cond_in_d``, ``D(x, c)``: adversarial logits of any shape
    with N first ((N,), (N, 1), (N, 1, 1, 1)), or a tuple ``(adv_logits, class_logits)`` when
    ``cfg.aux_weight > 0`` (ACGAN). Logits, never probabilities: the losses apply the
    sigmoid themselves (numerically stable).

Data contract
    ``data`` is an iterable of batches, or a callable ``data(start_step) -> iterable`` (so a
    resumed run can reseed its shuffling). A batch is an image tensor or a tuple
    ``(images, cond, ...)``; images are uint8 [0, 255] (converted on the device) or float in
    [-1, 1]; ``cond`` is int64 labels (N,) or a float (multi-hot) matrix (N, K). Fake images
    reuse the real batch's conditions (so the label distribution matches the data); for the
    ACGAN term int64 labels use cross-entropy and float conditions multi-label BCE.

Checkpoints (self-describing dicts, loaded with ``weights_only=True``)
    ``last.pt`` / ``best.pt``: ``{"version", "config", "step", "G", "D", "ema", "opt_G",
    "opt_D", "scaler", "rng", "best"}``; ``common.checkpoint.export_generator`` writes the shipped
    form ``{"version", "config", "model" (EMA weights if any, fp16), "step", "metrics"}``.

Helpers: ``generate(G, n, z_dim, seed, cond)`` (per-image noise drawn on the CPU from one seeded
generator, so outputs do not depend on batch size or device), ``recompute_bn_stats``,
``diff_augment``, ``gradient_penalty``, ``r1_penalty``.

``metrics.jsonl`` records: ``{"kind": "train", "step", "kimg", "img_per_s" (real images per second
of training compute), "loss_D", "loss_G", "d_real", "d_fake", ["gp", "r1", "aux_D", "aux_G",
"acc_real"]}`` averaged over ``log_every`` steps; ``{"kind": "eval", "step", <eval_fn's keys>}``;
``{"kind": "error", ...}`` when a loss is not finite.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import export_state, generator_state_dict
from common.data import save_grid, to_float
from common.errors import UserError
from common.training import (CHECKPOINT_VERSION, EMA, PRECISIONS, GracefulStop, MetricsLog, NonFiniteLoss,
                             TrainPrecision, atomic_torch_save, atomic_write_json, check_finite, float_state_dict,
                             load_checkpoint, load_states, pick_device, rng_state, seed_everything, set_rng_state)

LOSSES = ("bce", "hinge", "wgan", "lsgan")


@dataclass
class GANConfig:
    """Settings of ``train_gan`` (see the module docstring). Subclass it to add model fields."""

    # objective
    loss: str = "bce"  # adversarial loss: bce (non-saturating) | hinge | wgan | lsgan
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight (10 with loss wgan; 0: off)
    r1_gamma: float = 0.0  # R1 penalty on real images, gamma / 2 * |grad D|^2 (0: off)
    reg_every: int = 1  # lazy regularisation: the penalty every k-th D step, weighted by k
    aux_weight: float = 0.0  # ACGAN class-loss weight (needs conditional true; 0: no class head)
    aux_fake_weight: float = 1.0  # ACGAN: weight of D's class loss on fakes (0: D's classifier sees real images only)
    diffaug: str = ""  # DiffAugment policy on every D input, e.g. color,translation,cutout ('': none)
    phases: str = "D,G"  # phases of one step, in order: D,G | D,D,D,D,D,G (n_critic 5) | D,G,G
    # conditioning
    conditional: bool = False  # class labels flow from the batch to G (and D)
    cond_in_d: bool = False  # D is called D(x, c) (projection / concatenation) instead of D(x)
    num_classes: int = 0  # classes of the conditional model (sample grids use one column each)
    # optimisation
    z_dim: int = 100  # length of G's noise vector z
    batch_size: int = 64  # real images per D phase (per process)
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D (TTUR: often 2x lr_g)
    beta1: float = 0.5  # Adam beta1 of both optimisers
    beta2: float = 0.999  # Adam beta2 of both optimisers
    ema_decay: float = 0.0  # EMA decay of G's weights, used for samples, evaluation and export (0: no EMA)
    ema_bn_stats: bool = True  # recompute the EMA G's BatchNorm statistics from its own outputs before use
    max_steps: int = 10000  # total training steps (one step = one pass over the phase list)
    # bookkeeping
    seed: int = 0  # seed of weights, batch order and noise
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    precision: str = "auto"  # training precision: auto (bf16 where native or supported, else fp16 on CUDA, fp32 on a CPU) | fp32 | bf16 | fp16
    channels_last: bool = True  # channels_last memory format for G and D
    threads: int = 0  # CPU threads for torch (0: torch's default); two jobs on a 2-core CPU: give each 1
    log_every: int = 50  # steps between rows of metrics.jsonl
    sample_every: int = 500  # steps between sample grids of fixed noise in samples/ (0: off)
    n_samples: int = 64  # images in each sample grid
    eval_every: int = 0  # steps between evaluations (FID for faces, accuracy for digits; 0: off)
    best_metric: str = ""  # evaluation metric whose best value keeps best.pt ('': none)
    best_mode: str = "min"  # min (FID) or max (accuracy): which value of best_metric is best
    save_every: int = 1000  # steps between atomic last.pt saves (0: by time only)
    save_every_min: float = 5.0  # minutes between atomic last.pt saves
    snapshot_every: int = 0  # >0: also keep the shipped form (G / EMA, fp16) every N steps in snapshots/
    # going on from earlier weights in a NEW run folder
    init_from: str = ""  # G (and EMA) from a shipped checkpoint / snapshot / last.pt; D too where the file has one
    d_warmup: int = 0  # the first N steps train D only (a fresh D catching up with an initialised G)


def validate_config(cfg: GANConfig) -> list[str]:
    """Check the loop's fields; returns the phase list. Raises ``UserError`` naming the bad value."""
    if cfg.loss not in LOSSES:
        raise UserError(f"unknown loss {cfg.loss!r} (choose from {', '.join(LOSSES)})")
    phases = [p.strip() for p in cfg.phases.split(",") if p.strip()]
    if not phases or any(p not in ("D", "G") for p in phases) or "G" not in phases or "D" not in phases:
        raise UserError(f"phases must be a comma-separated list of D and G with at least one of each, "
                        f"got {cfg.phases!r}")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.best_mode not in ("min", "max"):
        raise UserError(f"best_mode must be min or max, got {cfg.best_mode!r}")
    for name in ("batch_size", "z_dim", "reg_every", "log_every", "n_samples"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.aux_weight > 0 and not cfg.conditional:
        raise UserError("aux_weight > 0 (ACGAN) needs conditional=true")
    if cfg.aux_fake_weight < 0:
        raise UserError(f"aux_fake_weight must be >= 0, got {cfg.aux_fake_weight}")
    if cfg.d_warmup < 0:
        raise UserError(f"d_warmup must be >= 0, got {cfg.d_warmup}")
    if cfg.threads < 0:
        raise UserError(f"threads must be >= 0 (0: torch's default), got {cfg.threads}")
    parse_diffaug(cfg.diffaug)
    return phases


# ----------------------------------------------------------------------------- DiffAugment
_DIFFAUG = ("color", "translation", "cutout")


def parse_diffaug(policy: str) -> list[str]:
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    for p in ops:
        if p not in _DIFFAUG:
            raise UserError(f"unknown DiffAugment op {p!r} (choose from {', '.join(_DIFFAUG)})")
    return ops


def diff_augment(x: torch.Tensor, policy: str | list[str]) -> torch.Tensor:
    """Differentiable augmentation (Zhao et al. 2020), the same ops for real and fake D inputs.

    x: (N, C, H, W) in [-1, 1]. color: random brightness (+-0.5), saturation (x0..2), contrast
    (x0.5..1.5); translation: shift by up to 1/8 of the size, zero padded; cutout: one zeroed
    square of half the size. Random numbers come from the global torch RNG (restored on resume).
    """
    ops = parse_diffaug(policy) if isinstance(policy, str) else policy
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    for op in ops:
        if op == "color":
            x = x + (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) * 2) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) + 0.5) + mean
        elif op == "translation":
            sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
            ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=dev)
            tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=dev)
            gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
            gy = (gy.unsqueeze(0) + ty + 1).clamp(0, h + 1)  # index into the 1-padded image
            gx = (gx.unsqueeze(0) + tx + 1).clamp(0, w + 1)
            xp = F.pad(x, [1, 1, 1, 1])
            idx = (gy * (w + 2) + gx).flatten(1)  # (N, H*W)
            x = xp.flatten(2).gather(2, idx.unsqueeze(1).expand(-1, x.shape[1], -1)).view_as(x)
        elif op == "cutout":  # one ch x cw square per image, centred at a random pixel, set to 0
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            y0 = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=dev) - ch // 2
            x0 = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=dev) - cw // 2
            gy = torch.arange(h, device=dev).view(1, h, 1)
            gx = torch.arange(w, device=dev).view(1, 1, w)
            inside = (gy >= y0) & (gy < y0 + ch) & (gx >= x0) & (gx < x0 + cw)  # (N, H, W)
            x = x * (~inside).unsqueeze(1).to(dt)
    return x


# ----------------------------------------------------------------------------- penalties
def _adv(out) -> torch.Tensor:
    """Adversarial logits (N,) from a D output (tensor of any shape with N first, or a tuple)."""
    adv = out[0] if isinstance(out, (tuple, list)) else out
    return adv.reshape(adv.shape[0], -1).mean(dim=1).float()


def gradient_penalty(d_fn: Callable[[torch.Tensor], Any], real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat on real-fake lines."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(_adv(d_fn(x_hat)).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(d_fn: Callable[[torch.Tensor], Any], real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, eq. 9 without gamma/2): E[||grad_x D(x)||^2] on real images."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_adv(d_fn(x)).sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


# ----------------------------------------------------------------------------- loss object
class GANLoss:
    """Adversarial (+ ACGAN, + penalty) losses; ``accumulate_gradients`` runs one phase's backward.

    ``autocast`` is a zero-argument context factory (``contextlib.nullcontext`` on CPU); the
    penalties are computed outside it, in fp32, so double backward is exact under AMP.
    """

    def __init__(self, G: nn.Module, D: nn.Module, cfg: GANConfig,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 memory_format: torch.memory_format = torch.contiguous_format):
        validate_config(cfg)
        self.G, self.D, self.cfg, self.autocast = G, D, cfg, autocast
        self.augment = parse_diffaug(cfg.diffaug)
        self.memory_format = memory_format

    # --- forward helpers
    def run_G(self, n: int, cond: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        z = torch.randn(n, self.cfg.z_dim, device=device)
        x = self.G(z, cond) if self.cfg.conditional else self.G(z)
        return x.contiguous(memory_format=self.memory_format)

    def run_D(self, x: torch.Tensor, cond: torch.Tensor | None):
        """D output on DiffAugment-ed x: tensor of logits, or (adv_logits, class_logits)."""
        if self.augment:
            x = diff_augment(x, self.augment)
        return self.D(x, cond) if (self.cfg.conditional and self.cfg.cond_in_d) else self.D(x)

    # --- losses
    def d_adv_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """Discriminator loss from logits (N,) of real and fake images."""
        kind = self.cfg.loss
        if kind == "bce":  # -log sigmoid(d_real) - log(1 - sigmoid(d_fake))
            return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if kind == "hinge":  # E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        if kind == "wgan":  # critic: E[D(G(z))] - E[D(x)]
            return d_fake.mean() - d_real.mean()
        return 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())  # lsgan

    def g_adv_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        """Generator loss from logits (N,) of fake images (non-saturating for bce)."""
        kind = self.cfg.loss
        if kind == "bce":
            return F.softplus(-d_fake).mean()
        if kind in ("hinge", "wgan"):
            return -d_fake.mean()
        return 0.5 * (d_fake - 1).pow(2).mean()

    @staticmethod
    def aux_loss(class_logits: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ACGAN class term: cross-entropy for int labels (N,), multi-label BCE for (N, K) floats."""
        class_logits = class_logits.float()
        if cond.dtype in (torch.int64, torch.int32):
            return F.cross_entropy(class_logits, cond.long())
        return F.binary_cross_entropy_with_logits(class_logits, cond.float())

    def _split(self, out) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(out, (tuple, list)):
            return _adv(out), out[1]
        if self.cfg.aux_weight > 0:
            raise UserError("aux_weight > 0 (ACGAN) needs a discriminator returning (adv_logits, class_logits)")
        return _adv(out), None

    def accumulate_gradients(self, phase: str, real: torch.Tensor, cond: torch.Tensor | None,
                             reg: bool = False, backward: Callable[[torch.Tensor], None] | None = None
                             ) -> dict[str, torch.Tensor]:
        """One phase: ``"D"`` (real vs detached fake, + penalties when ``reg``) or ``"G"``.

        real: (N, C, H, W) in [-1, 1]; cond: (N,) int64 / (N, K) float or None. Calls
        ``backward(total_loss)`` (default ``loss.backward()``) and returns detached loss terms.
        """
        cfg = self.cfg
        backward = backward or (lambda loss: loss.backward())
        n, dev = real.shape[0], real.device
        cond = cond if cfg.conditional else None
        stats: dict[str, torch.Tensor] = {}
        if phase == "G":
            with self.autocast():
                fake = self.run_G(n, cond, dev)
                d_fake, cls_fake = self._split(self.run_D(fake, cond))
                loss = self.g_adv_loss(d_fake)
                if cfg.aux_weight > 0:
                    aux = self.aux_loss(cls_fake, cond)
                    stats["aux_G"] = aux.detach()
                    loss = loss + cfg.aux_weight * aux
            stats["loss_G"] = loss.detach()
            backward(loss)
            return stats
        if phase != "D":
            raise ValueError(f"unknown phase {phase!r}")
        with self.autocast():
            with torch.no_grad():
                fake = self.run_G(n, cond, dev)
            d_real, cls_real = self._split(self.run_D(real, cond))
            d_fake, cls_fake = self._split(self.run_D(fake, cond))
            loss = self.d_adv_loss(d_real, d_fake)
            if cfg.aux_weight > 0:  # ACGAN: D classifies real and fake images (Odena et al. 2017, L_C)
                aux = self.aux_loss(cls_real, cond)
                if cfg.aux_fake_weight > 0:
                    aux = aux + cfg.aux_fake_weight * self.aux_loss(cls_fake, cond)
                stats["aux_D"] = aux.detach()
                loss = loss + cfg.aux_weight * aux
                if cond.dtype == torch.int64:
                    stats["acc_real"] = (cls_real.argmax(1) == cond).float().mean()
        stats["d_real"], stats["d_fake"] = d_real.detach().mean(), d_fake.detach().mean()
        stats["loss_D"] = loss.detach()
        if reg and (cfg.gp_weight > 0 or cfg.r1_gamma > 0):
            d_fn = lambda x: self.run_D(x, cond)  # noqa: E731  (fp32: outside autocast)
            if cfg.gp_weight > 0:
                gp = gradient_penalty(d_fn, real.float(), fake.float())
                stats["gp"] = gp.detach()
                loss = loss + cfg.gp_weight * cfg.reg_every * gp
            if cfg.r1_gamma > 0:
                r1 = r1_penalty(d_fn, real.float())
                stats["r1"] = r1.detach()
                loss = loss + 0.5 * cfg.r1_gamma * cfg.reg_every * r1
        backward(loss)
        return stats


# ----------------------------------------------------------------------------- sampling
@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, seed: int = 0, cond: torch.Tensor | None = None,
             batch_size: int = 250, device: torch.device | str | None = None) -> torch.Tensor:
    """n images (n, C, H, W) float in [-1, 1] on the CPU, from noise drawn with one seeded CPU generator.

    Image i always gets the same z (independent of batch size and device). ``cond`` (n, ...) is
    passed as ``G(z, c)``; G is used in whatever mode it is in (call ``.eval()`` first).
    """
    device = torch.device(device) if device is not None else next(G.parameters()).device
    z_all = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(0, n, batch_size):
        z = z_all[i:i + batch_size].to(device)
        x = G(z) if cond is None else G(z, cond[i:i + batch_size].to(device))
        out.append(x.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def recompute_bn_stats(G: nn.Module, z_dim: int, cond: torch.Tensor | None = None, n: int = 256,
                       batch_size: int = 64, device: torch.device | str | None = None, seed: int = 0) -> None:
    """Standing statistics (Brock et al. 2019, BigGAN sec. 3.1): set G's BatchNorm running stats to the
    plain average over n images of G's OWN outputs. An EMA generator otherwise carries the live G's
    stats, which do not match its averaged weights. ``cond`` (k, ...) is cycled over the batches.
    Noise comes from a private seeded generator (the global RNG is untouched). Leaves G in eval mode.
    """
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        G.eval()
        return
    device = torch.device(device) if device is not None else next(G.parameters()).device
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calls below
    g = torch.Generator().manual_seed(seed)
    G.train()
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), z_dim, generator=g).to(device)
        if cond is None:
            G(z)
        else:
            idx = torch.arange(i, i + len(z)) % len(cond)
            G(z, cond[idx].to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    G.eval()


def _new_heads(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Top-level submodules of ``model`` of which ``sd`` has no key at all (heads added since ``sd`` was saved)."""
    have = {k.split(".", 1)[0] for k in sd}
    return [name for name, m in model.named_children() if name not in have and m.state_dict()]


def init_weights(G: nn.Module, D: nn.Module, path: str | Path) -> int:
    """Load G (the EMA weights where the file has them) and, where present, D from a shipped checkpoint,
    snapshot or last.pt, for a new run that goes on from them. Returns the file's step."""
    ck = load_checkpoint(path, "a shipped checkpoint, snapshot or last.pt")
    pairs = [(G, "G")]
    ck = {**ck, "G": generator_state_dict(ck)}
    fresh = []
    if ck.get("D") is not None:
        ck["D"] = float_state_dict(ck["D"])
        fresh = _new_heads(D, ck["D"])  # e.g. a class head added to a trained D: starts fresh, the rest loads
        # only the new heads' keys come from D itself: any other missing key is still a mismatch
        ck["D"] = {**{k: v for k, v in D.state_dict().items() if k.split(".", 1)[0] in fresh}, **ck["D"]}
        pairs.append((D, "D"))
    load_states(path, ck, pairs, "init_from needs weights of the same architecture")
    what = " (D fresh)" if len(pairs) == 1 else (f" and D (new, fresh: {', '.join(fresh)})" if fresh else " and D")
    print(f"initialised G{what} from {path} (its step {ck.get('step')}; this run counts from 0)")
    return int(ck.get("step", 0))


# ----------------------------------------------------------------------------- the loop
def _unpack(batch, device: torch.device, memory_format) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        x, cond = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        x, cond = batch, None
    x = x.to(device, non_blocking=True)
    x = to_float(x) if x.dtype == torch.uint8 else x.float()
    x = x.contiguous(memory_format=memory_format)
    if cond is not None:
        cond = torch.as_tensor(cond).to(device, non_blocking=True)
    return x, cond


def _default_fixed_cond(cfg: GANConfig) -> torch.Tensor | None:
    if not cfg.conditional:
        return None
    if cfg.num_classes < 1:
        raise UserError("conditional GAN: pass fixed_cond= to train_gan or set num_classes")
    return torch.arange(cfg.n_samples) % cfg.num_classes  # grid columns = classes (nrow = num_classes)


def train_gan(G: nn.Module, D: nn.Module, data: Iterable | Callable[[int], Iterable], cfg: GANConfig,
              run_dir: str | Path, eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
              fixed_cond: torch.Tensor | None = None, progress: bool = True) -> dict:
    """Train G and D by walking ``cfg.phases`` each step until ``cfg.max_steps``; resume from run_dir/last.pt.

    Returns ``{"step", "stopped" (by signal), "last", "best", "metrics" (last eval)}``.
    See the module docstring for the model / data / checkpoint contracts.
    """
    from tqdm import tqdm

    phases = validate_config(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    G.to(device, memory_format=mf).train()
    D.to(device, memory_format=mf).train()
    prec = TrainPrecision(cfg.precision, device)
    autocast = prec.autocast
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
    n_real = phases.count("D")  # real batches per step
    loss_fn = GANLoss(G, D, cfg, autocast, mf)
    betas = (cfg.beta1, cfg.beta2)
    opt_G = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=cfg.lr_g, betas=betas)
    d_params = [p for p in D.parameters() if p.requires_grad]
    opt_D = torch.optim.Adam(d_params, lr=cfg.lr_d, betas=betas)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if cfg.init_from and not last_path.is_file():
        init_weights(G, D, cfg.init_from)
    ema = EMA(G, cfg.ema_decay) if cfg.ema_decay > 0 else None  # starts as G (the initialised one too)
    # fixed grid noise / conditions: from the seed alone, identical after a resume
    fixed_z = torch.randn(cfg.n_samples, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 12345))
    if cfg.conditional and fixed_cond is None:
        fixed_cond = _default_fixed_cond(cfg)
    grid_nrow = cfg.num_classes if (cfg.conditional and cfg.num_classes > 0) else 8

    step, best = 0, None
    if last_path.is_file():
        ck = load_checkpoint(last_path)
        pairs = [(G, "G"), (D, "D"), (opt_G, "opt_G"), (opt_D, "opt_D")]
        if ema is not None and ck.get("ema") is not None:
            pairs.insert(2, (ema, "ema"))
        load_states(last_path, ck, pairs, "use another run folder")
        prec.load_state_dict(ck.get("scaler"))
        set_rng_state(ck["rng"])
        step, best = int(ck["step"]), ck.get("best")
        G.to(device, memory_format=mf)
        D.to(device, memory_format=mf)
        if ema is not None:
            ema.module.to(device)
        print(f"resuming {run_dir} from step {step}")
    atomic_write_json(run_dir / "config.json", dataclasses.asdict(cfg))
    log = MetricsLog(run_dir / "metrics.jsonl", resume_from=step)

    def state() -> dict:
        if ema is not None:
            refresh_ema_bn()
        return {"version": CHECKPOINT_VERSION, "config": dataclasses.asdict(cfg), "step": step,
                "G": G.state_dict(), "D": D.state_dict(), "ema": ema.state_dict() if ema else None,
                "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(),
                "scaler": prec.state_dict(), "rng": rng_state(), "best": best,
                "data": source.state_dict() if hasattr(source, "state_dict") else None}

    def refresh_ema_bn() -> None:
        if cfg.ema_bn_stats and (fixed_cond is not None or not cfg.conditional):
            recompute_bn_stats(ema.module, cfg.z_dim, fixed_cond, device=device, seed=cfg.seed + 777)

    def g_eval() -> nn.Module:
        if ema is None:
            return G.eval()
        refresh_ema_bn()
        return ema.module.eval()

    def sample_grid() -> None:
        Ge = g_eval()
        with torch.no_grad(), autocast():
            z = fixed_z.to(device)
            x = Ge(z, fixed_cond.to(device)) if cfg.conditional else Ge(z)
        save_grid(x, run_dir / "samples" / f"step_{step:07d}.png", nrow=grid_nrow)
        G.train()

    def evaluate() -> dict:
        nonlocal best
        with torch.no_grad():
            res = {k: float(v) for k, v in eval_fn(g_eval(), step).items()}
        G.train()
        log.write(kind="eval", step=step, **res)
        m = cfg.best_metric
        if m and m in res and math.isfinite(res[m]):
            better = best is None or m not in best or \
                (res[m] < best[m] if cfg.best_mode == "min" else res[m] > best[m])
            if better:
                best = {"step": step, **res}
                atomic_torch_save(state(), best_path)
        return res

    source = data(step) if callable(data) else data
    saved_data = ck.get("data") if last_path.is_file() else None
    if saved_data is not None and hasattr(source, "load_state_dict"):
        source.load_state_dict(saved_data)  # its place in the epoch: the batches an uninterrupted run sees
    data_iter = iter(source)

    def next_batch():
        try:
            return _unpack(next(data_iter), device, mf)
        except StopIteration:
            raise UserError("the data iterator ran out; pass an endless iterable (e.g. TensorBatches)") from None

    t_ckpt, last_eval = time.time(), {}
    sums: dict[str, float] = {}
    n_sum, imgs, t_train = 0, 0, 0.0
    start = step
    stopped = False
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, dynamic_ncols=True, mininterval=1.0,
               desc=run_dir.name)
    with GracefulStop() as stop:
        while step < cfg.max_steps:
            if stop.requested:
                stopped = True
                break
            t0 = time.perf_counter()
            real, cond = None, None
            stats: dict[str, torch.Tensor] = {}
            for phase in (("D",) if step < cfg.d_warmup else phases):
                if phase == "D" or real is None:
                    real, cond = next_batch()
                if phase == "D":
                    imgs += real.shape[0]
                    opt_D.zero_grad(set_to_none=True)
                    reg = (step % cfg.reg_every == 0)
                    s = loss_fn.accumulate_gradients("D", real, cond, reg=reg, backward=prec.backward)
                    prec.step(opt_D)
                else:
                    opt_G.zero_grad(set_to_none=True)
                    _set_requires_grad(d_params, False)  # no D weight gradients in a G phase
                    s = loss_fn.accumulate_gradients("G", real, cond, backward=prec.backward)
                    _set_requires_grad(d_params, True)
                    prec.step(opt_G)
                    if ema is not None:
                        ema.update(G)
                stats.update(s)  # the last phase of each kind wins
                prec.update()
            values = dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))
            try:
                check_finite(step + 1, **values)  # before anything of this step is saved
            except NonFiniteLoss as e:
                bar.close()
                log.write(kind="error", step=step + 1, message=str(e), **values)
                raise
            t_train += time.perf_counter() - t0  # .tolist() above synchronised the GPU
            step += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n_sum += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                dt = max(t_train, 1e-9)
                rec = {k: v / n_sum for k, v in sums.items()}
                log.write(kind="train", step=step, kimg=step * n_real * cfg.batch_size / 1000,
                          img_per_s=imgs / dt, **rec)
                bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("loss_D", "loss_G") if k in rec})
                sums, n_sum, imgs, t_train = {}, 0, 0, 0.0
            if cfg.sample_every > 0 and (step % cfg.sample_every == 0 or step == cfg.max_steps):
                sample_grid()
            if eval_fn is not None and cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                last_eval = evaluate()
            if cfg.snapshot_every > 0 and step % cfg.snapshot_every == 0:
                export_state(state(), run_dir / "snapshots" / f"step_{step:07d}.pt", source=f"{run_dir.name} step {step}")
            if (cfg.save_every > 0 and step % cfg.save_every == 0) or \
                    time.time() - t_ckpt > cfg.save_every_min * 60:
                atomic_torch_save(state(), last_path)
                t_ckpt = time.time()
    bar.close()
    if step > start or not last_path.is_file():
        final = state()  # built once: it refreshes the EMA's BatchNorm statistics
        atomic_torch_save(final, last_path)
        if cfg.snapshot_every > 0 and step > start:  # the final form, with D, so that a later run can go on (init_from)
            export_state(final, run_dir / "snapshots" / f"step_{step:07d}.pt", source=f"{run_dir.name} step {step}",
                         include_d=True)
    if stopped:
        print(f"stopped at step {step}; state saved to {last_path} (rerun the same command to resume)")
    return {"step": step, "stopped": stopped, "last": str(last_path),
            "best": str(best_path) if best_path.is_file() else None, "metrics": last_eval}


def _set_requires_grad(params: list[torch.Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)
