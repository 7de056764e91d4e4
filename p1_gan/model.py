"""Networks of problem 1 (64x64 faces); nn.Modules only (losses and the loop live in common/gan.py).

Method A: the reference DCGAN (Radford et al. 2016; report 000): ``Generator`` / ``Discriminator``
with exactly its layer list at ngf = ndf = 64. The discriminator returns logits; its Sigmoid is
folded into the loss (BCE with logits, numerically stable), otherwise the layers are identical.

Method B: the same cheap all-convolutional shape (what a 2-core CPU can train), with the changes
that matter most for FID at this size: a discriminator with spectral normalisation on every layer
and no BatchNorm (SNGAN, Miyato et al. 2018), LeakyReLU 0.1, trained with the hinge loss, TTUR,
DiffAugment and an EMA of the generator (settings in p1_gan/config.py). Its generator is the DCGAN
generator (BatchNorm, ReLU, Tanh).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def dcgan_init(m: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """DCGAN generator: z (N, z_dim) -> images (N, 3, 64, 64) in [-1, 1]."""

    def __init__(self, z_dim: int = 100, ngf: int = 64, channels: int = 3):
        super().__init__()
        self.z_dim = z_dim
        self.main = nn.Sequential(
            nn.ConvTranspose2d(z_dim, ngf * 8, 4, 1, 0, bias=False),  # (ngf*8) x 4 x 4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # (ngf*4) x 8 x 8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # (ngf*2) x 16 x 16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # ngf x 32 x 32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False),  # channels x 64 x 64
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    """DCGAN discriminator: images (N, 3, 64, 64) -> real/fake logits (N,)."""

    def __init__(self, ndf: int = 64, channels: int = 3):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),  # ndf x 32 x 32
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # (ndf*2) x 16 x 16
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # (ndf*4) x 8 x 8
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # (ndf*8) x 4 x 4
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # 1 x 1 x 1 (logit; Sigmoid is in the loss)
        )
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


class SNDiscriminator(nn.Module):
    """Method B discriminator: spectral-normalised convs, no BatchNorm, LeakyReLU 0.1 (SNGAN).

    images (N, 3, 64, 64) -> logits (N,). Each 4x4 stride-2 conv halves the size as in DCGAN;
    ``extra=True`` adds a 3x3 stride-1 conv before each of them (SNGAN's "standard CNN", ~2x cost).
    """

    def __init__(self, ndf: int = 64, channels: int = 3, extra: bool = False):
        super().__init__()
        widths = [channels, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):  # 64 -> 32 -> 16 -> 8 -> 4
            if extra and i > 0:
                layers += [nn.Conv2d(cin, cin, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True)]
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True)]
        layers.append(nn.Conv2d(ndf * 8, 1, 4, 1, 0))  # (ndf*8) x 4 x 4 -> 1 x 1 x 1
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)
        for m in self.main:
            if isinstance(m, nn.Conv2d):
                spectral_norm(m)  # W / sigma(W), one power iteration per forward (Miyato et al., eq. 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()
