"""Networks of problem 2 (nn.Modules only; schedules/samplers live in ``schedulers.py``).

* ``UNet``: conditional noise predictor eps_theta(x_t, t, y) for 28x28 digits, with a sinusoidal
  time embedding, a class embedding with one extra learned *null* class (index ``num_classes``) for
  classifier-free guidance (Ho & Salimans 2022), FiLM-style ResBlocks and self-attention at 7x7.
* ``ACGANGenerator`` / ``ACGANDiscriminator``: ACGAN (Odena et al. 2017); D has a real/fake head
  and a class head.
* ``SAGANGenerator`` / ``SAGANDiscriminator``: conditional SAGAN-style GAN (Zhang et al. 2019) as in
  reference report 004: spectral norm, self-attention, the condition vector (one-hot or
  multi-hot, shape (B, num_classes)) projected by a linear layer and concatenated (to z in G,
  as an extra image channel in D).

Images are (B, 3, 28, 28) in [-1, 1]; labels are int64 (B,) unless said otherwise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


# ============================================================================ diffusion U-Net
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017, sec. 3.5) of timesteps t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GN-SiLU-conv, FiLM by the (time + class) embedding (scale/shift), GN-SiLU-dropout-conv, skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map (residual)."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)  # (B, h, d, N)
        if x.is_cuda:  # fused kernel
            out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
            out = out.transpose(-1, -2)
        else:  # plain softmax(q^T k / sqrt(d)) v: much faster than SDPA's CPU fallback
            attn = torch.softmax((q.transpose(-1, -2) @ k) * q.shape[2] ** -0.5, dim=-1)  # (B, h, N, N)
            out = v @ attn.transpose(-1, -2)
        return x + self.proj(out.reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)  # 28 -> 14 -> 7

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """Conditional eps-prediction U-Net: ``forward(x (B,C,H,W), t (B,) int, y (B,) int) -> eps (B,C,H,W)``.

    ``y == num_classes`` is the learned null class (unconditional prediction for classifier-free
    guidance). Levels: 28x28, 14x14, 7x7 (``len(channel_mults)`` levels, each halving the size).
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 32, channel_mults: tuple = (1, 2, 4),
                 num_res_blocks: int = 1, attn_levels: tuple = (2,), num_classes: int = 10,
                 dropout: float = 0.1):
        super().__init__()
        self.num_classes, self.base_channels = num_classes, base_channels
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)  # +1: learned null class
        self.inc = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        chans = [base_channels * m for m in channel_mults]
        self.down = nn.ModuleList()
        skip_ch, ch = [base_channels], base_channels
        for i, c in enumerate(chans):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(ch, c, emb_dim, dropout)] + ([SelfAttention(c)] if i in attn_levels else [])
                self.down.append(nn.ModuleList(blocks))
                ch = c
                skip_ch.append(ch)
            if i < len(chans) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), SelfAttention(ch),
                                  ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            for _ in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skip_ch.pop(), c, emb_dim, dropout)]
                blocks += [SelfAttention(c)] if i in attn_levels else []
                self.up.append(nn.ModuleList(blocks))
                ch = c
            if i > 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels)) + self.class_emb(y)
        h = self.inc(x)
        skips = [h]
        for blocks in self.down:
            for m in blocks:
                h = m(h, emb)
            skips.append(h)
        for m in self.mid:
            h = m(h, emb)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            for m in blocks:
                h = m(h, emb)
        return self.out(h)


# ============================================================================ ACGAN
class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a per-class gain and bias (de Vries et al. 2017;
    Miyato & Koyama 2018): ``forward(x (B, C, H, W), y (B,))``. Starts as plain BatchNorm (gain 1, bias 0)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class ACGANGenerator(nn.Module):
    """z (B, z_dim) and labels y (B,) -> images (B, 3, 28, 28) in [-1, 1].

    The label embedding multiplies z (as in the ACGAN reference implementations), then
    Linear -> (4c, 7, 7) -> ConvT -> (2c, 14, 14) -> ConvT -> (c, 28, 28) -> conv -> tanh.
    ``cond_bn``: the two conv BatchNorms become class-conditional (the label then also acts at
    every resolution, not only through z); off, the layers and weight names are the original ones.
    """

    def __init__(self, z_dim: int = 100, num_classes: int = 10, channels: int = 64, cond_bn: bool = False):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        c = channels

        def bn(ch: int) -> nn.Module:
            return ConditionalBatchNorm2d(ch, num_classes) if cond_bn else nn.BatchNorm2d(ch)

        self.label_emb = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Sequential(nn.Linear(z_dim, 4 * c * 7 * 7, bias=False), nn.BatchNorm1d(4 * c * 7 * 7), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1, bias=False), bn(2 * c), nn.ReLU(True),  # 14x14
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False), bn(c), nn.ReLU(True),  # 28x28
            nn.Conv2d(c, 3, 3, 1, 1), nn.Tanh(),
        )
        self._c = c

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(z * self.label_emb(y)).view(-1, 4 * self._c, 7, 7)
        for m in self.net:
            h = m(h, y) if isinstance(m, ConditionalBatchNorm2d) else m(h)
        return h


class ACGANDiscriminator(nn.Module):
    """images (B, 3, 28, 28) -> (real/fake logit (B,), class logits (B, num_classes))."""

    def __init__(self, num_classes: int = 10, channels: int = 64, dropout: float = 0.25):
        super().__init__()
        c = channels

        def block(i, o, norm=True):
            return [nn.Conv2d(i, o, 3, 2, 1)] + ([nn.BatchNorm2d(o)] if norm else []) + \
                [nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]

        self.features = nn.Sequential(*block(3, c, norm=False), *block(c, 2 * c), *block(2 * c, 4 * c),  # 14, 7, 4
                                      nn.Flatten())
        feat = 4 * c * 4 * 4
        self.adv_head = nn.Linear(feat, 1)
        self.cls_head = nn.Linear(feat, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.adv_head(h).squeeze(1), self.cls_head(h)


# ============================================================================ SAGAN-style cGAN
class SAGANAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019, eq. 1-3): query/key at C/8, learned gate gamma (init 0)."""

    def __init__(self, ch: int):
        super().__init__()
        k = max(ch // 8, 1)
        self.q = spectral_norm(nn.Conv2d(ch, k, 1))
        self.k = spectral_norm(nn.Conv2d(ch, k, 1))
        self.v = spectral_norm(nn.Conv2d(ch, ch, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)  # (B, C', N)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N), eq. 1
        out = (v @ attn.transpose(1, 2)).view(b, c, h, w)  # eq. 2
        return x + self.gamma * out  # eq. 3


def as_condition(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int labels (B,) -> one-hot float (B, num_classes); float (B, num_classes) multi-hot passes through."""
    if y.dtype in (torch.int64, torch.int32, torch.long):
        return F.one_hot(y, num_classes).float()
    if y.dim() != 2 or y.shape[1] != num_classes:
        raise ValueError(f"condition must be int labels (B,) or a float (B, {num_classes}) vector, got {tuple(y.shape)}")
    return y.float()


class SAGANGenerator(nn.Module):
    """z (B, z_dim), condition y (B,) ints or (B, num_classes) multi-hot -> (B, 3, 28, 28).

    Condition -> Linear -> LeakyReLU (z_dim) concatenated with z, then SN-ConvT + BN + ReLU:
    1 -> 7 (self-attention) -> 14 (self-attention) -> 28 -> ConvT -> tanh (attention at 7x7 and
    14x14: at 28x28 its 784x784 maps would cost more than the rest of G).
    """

    def __init__(self, z_dim: int = 100, num_classes: int = 10, channels: int = 64):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        c = channels
        self.cond = nn.Sequential(nn.Linear(num_classes, z_dim), nn.LeakyReLU(0.2, True))
        self.l1 = nn.Sequential(spectral_norm(nn.ConvTranspose2d(2 * z_dim, 4 * c, 7)), nn.BatchNorm2d(4 * c), nn.ReLU(True))  # 7
        self.attn1 = SAGANAttention(4 * c)
        self.l2 = nn.Sequential(spectral_norm(nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1)), nn.BatchNorm2d(2 * c), nn.ReLU(True))  # 14
        self.attn2 = SAGANAttention(2 * c)
        self.l3 = nn.Sequential(spectral_norm(nn.ConvTranspose2d(2 * c, c, 4, 2, 1)), nn.BatchNorm2d(c), nn.ReLU(True))  # 28
        self.last = nn.Sequential(nn.ConvTranspose2d(c, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z, self.cond(as_condition(y, self.num_classes))], dim=1)[:, :, None, None]
        h = self.attn1(self.l1(h))  # (B, 4c, 7, 7)
        h = self.attn2(self.l2(h))  # (B, 2c, 14, 14)
        return self.last(self.l3(h))  # (B, 3, 28, 28)


class SAGANDiscriminator(nn.Module):
    """images (B, 3, 28, 28), condition (B,) ints or (B, num_classes) multi-hot -> logit (B,).

    Condition -> Linear -> LeakyReLU (28*28) joined as a 4th input channel; SN-conv + LeakyReLU 0.1:
    28 -> 14 -> 7 (self-attention) -> 4 (self-attention) -> 1 logit (no sigmoid: the loss applies it).
    ``projection=True`` adds the projection term of Miyato & Koyama (2018) (a stronger condition);
    ``class_head=True`` adds an ACGAN-style classifier on the pooled features, and forward then returns
    (logit (B,), class logits (B, num_classes)) for the loop's ``aux_weight`` term. ``head_blind=True``
    computes the class head from a second pass with the condition channel zeroed, so it must read the
    digit from the image: a head that sees the condition can be satisfied by it (on real images the
    condition always matches the label), and then it passes G's ambiguous digits.
    """

    def __init__(self, num_classes: int = 10, channels: int = 64, img_size: int = 28, projection: bool = False,
                 class_head: bool = False, head_blind: bool = False):
        super().__init__()
        self.num_classes, self.img_size, self.head_blind = num_classes, img_size, head_blind
        c = channels
        self.cond = nn.Sequential(nn.Linear(num_classes, img_size * img_size), nn.LeakyReLU(0.2, True))
        # projection discriminator (Miyato & Koyama 2018): logit += <embed(y), sum-pooled features>
        self.proj = spectral_norm(nn.Linear(num_classes, 4 * c, bias=False)) if projection else None
        self.l1 = nn.Sequential(spectral_norm(nn.Conv2d(4, c, 4, 2, 1)), nn.LeakyReLU(0.1, True))  # 14
        self.l2 = nn.Sequential(spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1)), nn.LeakyReLU(0.1, True))  # 7
        self.attn1 = SAGANAttention(2 * c)
        self.l3 = nn.Sequential(spectral_norm(nn.Conv2d(2 * c, 4 * c, 3, 2, 1)), nn.LeakyReLU(0.1, True))  # 4
        self.attn2 = SAGANAttention(4 * c)
        self.last = spectral_norm(nn.Conv2d(4 * c, 1, 4))
        # LayerNorm: the pooled SN features are tiny (|h| ~ 0.02), so a bare head learns its logits slowly; no SN
        self.cls = nn.Sequential(nn.LayerNorm(4 * c), nn.Linear(4 * c, num_classes)) if class_head else None

    def extra_repr(self) -> str:
        return f"head_blind={self.head_blind}" if self.cls is not None else ""

    def features(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B, 4c, 4, 4) features of images x with condition map c (B, 1, img_size, img_size)."""
        h = self.attn1(self.l2(self.l1(torch.cat([x, c], dim=1))))
        return self.attn2(self.l3(h))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        y = as_condition(y, self.num_classes)
        c = self.cond(y).view(-1, 1, self.img_size, self.img_size)
        h = self.features(x, c)
        out = self.last(h).flatten()
        if self.proj is not None:
            out = out + (self.proj(y) * h.sum(dim=(2, 3))).sum(dim=1)
        if self.cls is not None:
            return out, self.cls((self._blind_features(x) if self.head_blind else h).mean(dim=(2, 3)))
        return out

    def _blind_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x, x.new_zeros(len(x), 1, self.img_size, self.img_size))

    def class_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The class head's logits (B, num_classes) alone, for ranking candidates: a blind head
        needs only its own pass, not the conditional one."""
        if self.cls is None:
            raise ValueError("this discriminator has no class head")
        if self.head_blind:
            return self.cls(self._blind_features(x).mean(dim=(2, 3)))
        return self(x, y)[1]
