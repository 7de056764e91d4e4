"""Networks for unsupervised domain adaptation on 28x28 digits (DANN, Ganin et al. 2016).

    x (B, 3, 28, 28) in [-1, 1] -> FeatureExtractor -> f (B, D) -> LabelPredictor -> logits (B, 10)
                                                           \\-> GradientReversal -> DomainClassifier -> (B,)

Modules only: the lambda schedule, losses and augmentations live in ``p3_dann/adapt.py``.
"""
from __future__ import annotations

import torch
from torch import nn


class GradReverse(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``-lambda`` (DANN eq. 13)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    return GradReverse.apply(x, float(lambd))


class InputNorm(nn.Module):
    """Per-image standardisation over (C, H, W): removes each image's brightness and contrast,
    which is most of the colour gap between MNIST-M, SVHN and USPS. ``mode='none'`` is identity."""

    def __init__(self, mode: str = "instance", eps: float = 1e-3):
        super().__init__()
        if mode not in ("instance", "none"):
            raise ValueError(f"input_norm must be 'instance' or 'none', got {mode!r}")
        self.mode, self.eps = mode, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / (std + self.eps)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def conv_bn(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FeatureExtractor(nn.Module):
    """Small VGG-style CNN: (B, 3, 28, 28) -> (B, 4 * width) features.

    28x28 -conv5-pool-> 14x14 -conv3-conv3-pool-> 7x7 -conv3-> global average pool.
    """

    def __init__(self, width: int = 32, in_channels: int = 3, input_norm: str = "instance", dropout: float = 0.1):
        super().__init__()
        w = width
        self.out_dim = 4 * w
        self.net = nn.Sequential(
            InputNorm(input_norm),
            *conv_bn(in_channels, w, 5), nn.MaxPool2d(2),           # w x 14 x 14
            *conv_bn(w, 2 * w), *conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),  # 2w x 7 x 7
            nn.Dropout2d(dropout),
            *conv_bn(2 * w, 4 * w),                                  # 4w x 7 x 7
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),                   # 4w
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LabelPredictor(nn.Module):
    """(B, D) features -> (B, num_classes) logits."""

    def __init__(self, in_dim: int, hidden: int = 128, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class DomainClassifier(nn.Module):
    """(B, D) features -> (B,) logit of "comes from the target domain"."""

    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(1)


class DANN(nn.Module):
    """Feature extractor + label predictor + domain classifier (the latter unused by source/target modes).

    ``forward(x)`` returns class logits (B, 10); ``features(x)`` the (B, D) features;
    ``domain_logits(f, lambd)`` reverses the gradient by ``lambd`` before the domain classifier.
    """

    def __init__(self, width: int = 32, input_norm: str = "instance", hidden: int = 128,
                 domain_hidden: int = 256, num_classes: int = 10):
        super().__init__()
        self.feature = FeatureExtractor(width, 3, input_norm)
        self.classifier = LabelPredictor(self.feature.out_dim, hidden, num_classes)
        self.domain = DomainClassifier(self.feature.out_dim, domain_hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature(x))

    def domain_logits(self, f: torch.Tensor, lambd: float) -> torch.Tensor:
        return self.domain(grad_reverse(f, lambd))
