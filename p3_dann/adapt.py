"""Schedules, batch augmentations and losses of the adaptation methods (no training loop here).

- ``dann_lambda(p)``: warm-start of the gradient-reversal weight, 2 / (1 + exp(-gamma p)) - 1
  (DANN, Ganin et al. 2016, sec. 5.2.2), p = training progress in [0, 1].
- ``dann_lr(p)``: the paper's annealing  mu_p = mu_0 / (1 + 10 p)^0.75.
- ``Augment``: random affine (rotation, scale, shift), colour/invert jitter on a float batch,
  all on the batch's device with one ``torch.Generator``.
- ``DomainAdversarialLoss``: BCE of the domain classifier on reversed features (+ domain accuracy).
- ``pseudo_label_loss``: mean-teacher / FixMatch-style consistency: cross entropy of the student
  on a strongly augmented target batch against the teacher's confident argmax on a weak view.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """Gradient reversal weight at progress ``p`` in [0, 1]: 0 -> 1 smoothly."""
    p = min(max(p, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def dann_lr(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Learning-rate multiplier mu_p / mu_0 = 1 / (1 + alpha p)^beta."""
    return 1.0 / (1.0 + alpha * min(max(p, 0.0), 1.0)) ** beta


class Augment:
    """Random per-image transforms of a float batch (B, C, H, W) in [-1, 1].

    ``strength``: ``none`` (identity), ``weak`` (shift +-2 px, zoom 0.9-1.3, rotation +-10 deg),
    ``strong`` (shift +-3 px, zoom 0.8-1.4, rotation +-20 deg, shear, random colour inversion,
    channel shuffle, contrast/brightness jitter). Zooming in more than out covers digits that fill
    the frame (USPS) as well as small centred ones (MNIST).
    """

    PARAMS = {"weak": dict(rot=10, scale=(0.9, 1.3), shift=2, shear=0.0, color=False),
              "strong": dict(rot=20, scale=(0.8, 1.4), shift=3, shear=0.2, color=True)}

    def __init__(self, strength: str = "weak"):
        if strength not in ("none", "weak", "strong"):
            raise ValueError(f"augment must be none, weak or strong, got {strength!r}")
        self.strength = strength

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.strength == "none":
            return x
        p = self.PARAMS[self.strength]
        b, c, h, w = x.shape
        dev = x.device

        def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return (torch.rand(shape or (b,), generator=generator) * (hi - lo) + lo).to(dev)

        ang = u(-p["rot"], p["rot"]) * math.pi / 180
        s = u(*p["scale"])  # > 1 zooms in
        sh = u(-p["shear"], p["shear"])
        tx, ty = u(-1, 1) * p["shift"] * 2 / w, u(-1, 1) * p["shift"] * 2 / h
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.stack([torch.stack([cos, -sin + sh, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        bg = x[:, :, 0, 0].reshape(b, c, 1, 1)  # pad with the corner colour, not black
        out = F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg
        if p["color"]:
            inv = (u(0, 1) < 0.5).reshape(b, 1, 1, 1)
            out = torch.where(inv, -out, out)
            if c == 3:
                perm = torch.argsort(torch.rand(b, 3, generator=generator), dim=1).to(dev)
                out = torch.gather(out, 1, perm.reshape(b, 3, 1, 1).expand(b, 3, h, w))
            contrast = u(0.5, 1.5).reshape(b, 1, 1, 1)
            bright = u(-0.3, 0.3).reshape(b, 1, 1, 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = ((out - mean) * contrast + mean + bright).clamp(-1, 1)
        return out


class DomainAdversarialLoss:
    """BCE of the domain classifier on reversed features: source = 0, target = 1 (DANN eq. 9).

    ``__call__(model, f_s, f_t, lambd)`` -> (loss, domain accuracy).
    """

    def __call__(self, model: nn.Module, f_s: torch.Tensor, f_t: torch.Tensor, lambd: float):
        d = model.domain_logits(torch.cat([f_s, f_t]), lambd).float()
        y = torch.cat([torch.zeros(len(f_s)), torch.ones(len(f_t))]).to(d.device)
        loss = F.binary_cross_entropy_with_logits(d, y)
        acc = ((d > 0).float() == y).float().mean()
        return loss, acc


def pseudo_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, threshold: float):
    """Cross entropy of the student against the teacher's argmax where the teacher's confidence
    exceeds ``threshold`` (averaged over the whole batch, as in FixMatch).

    Returns (loss, fraction of the batch above the threshold)."""
    prob = teacher_logits.detach().float().softmax(1)
    conf, label = prob.max(1)
    mask = (conf >= threshold).float()
    loss = (F.cross_entropy(student_logits.float(), label, reduction="none") * mask).mean()
    return loss, mask.mean()
