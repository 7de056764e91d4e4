"""Noise schedule and samplers (plain Python objects, no network inside), diffusers-style.

Every sampler has one interface:

    sampler.add_noise(x0, eps, t)        # forward process q(x_t | x_0), for training
    sampler.set_timesteps(n)             # choose n of the T training timesteps, descending (``spacing``)
    for t in sampler.timesteps:
        x = sampler.step(eps_theta(x, t), t, x, generator=gens)

Timesteps are 0-based indices: index t is the paper's step t+1, alpha_bar[t] = prod_{s<=t} (1 - beta_s).
``generator`` is one ``torch.Generator`` or a list of them, one per image (``randn`` below), so a
seeded image comes out the same whatever the batch it is sampled in.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: Sequence[int], generator: Generators = None, device: torch.device | str = "cpu",
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape`` (B, ...). With a list of B generators, image i is drawn from
    generator i (on the CPU, then moved), so it does not depend on the batch it belongs to."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        x = torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generator])
    else:
        x = torch.randn(tuple(shape), generator=generator)
    return x.to(device=device, dtype=dtype)


def per_image_generators(seed: int, n: int, start: int = 0) -> list[torch.Generator]:
    """Generators for images start..start+n-1 of a run seeded with ``seed`` (image i: seed * 1_000_003 + i)."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(start, start + n)]


class NoiseSchedule:
    """Variance-preserving schedule: betas, alphas, alpha_bar (float64 on the CPU) for T steps.

    ``linear``: beta from 1e-4 to 0.02 (Ho et al. 2020, sec. 4). ``cosine``: alpha_bar(t) =
    cos^2(((t/T + s)/(1 + s)) pi/2) (Nichol & Dhariwal 2021, eq. 17), betas clipped at 0.999.
    """

    def __init__(self, num_timesteps: int = 1000, kind: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02):
        T = num_timesteps
        if kind == "linear":
            betas = torch.linspace(beta_start * 1000 / T, beta_end * 1000 / T, T, dtype=torch.float64)
        elif kind == "cosine":
            s = 0.008
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"unknown noise schedule {kind!r} (linear or cosine)")
        self.num_timesteps, self.kind = T, kind
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)

    def ab(self, t: int) -> float:
        """alpha_bar at timestep index t; t = -1 means 'no noise' (alpha_bar = 1)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4); t (B,) int."""
        ab = self.alpha_bar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def log_snr(self) -> torch.Tensor:
        """lambda_t = log(alpha_t / sigma_t) = 0.5 log(alpha_bar_t / (1 - alpha_bar_t)) per index (T,), decreasing."""
        return 0.5 * torch.log(self.alpha_bar / (1 - self.alpha_bar))

    def predict_x0(self, x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (eq. 4 solved for x0)."""
        ab = self.ab(t)
        return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)


SPACINGS = ("trailing", "logsnr")


def spaced_timesteps(schedule: NoiseSchedule, n: int, spacing: str = "trailing") -> list[int]:
    """n of the schedule's T timestep indices, descending from T-1; the sampler's last step goes from
    the last of them to the clean image.

    ``trailing``: uniform in t (Lin et al. 2024, table 2). ``logsnr``: uniform in lambda = log(alpha /
    sigma), the n + 1 knots from lambda(T-1) to lambda(0) of DPM-Solver's low-resolution setting (Lu et
    al. 2022, sec. 3.3) with the last knot (index 0, almost clean) taken as the clean image: it spends
    the steps evenly in log noise level, so the last one starts from much less noise than ``trailing``'s
    (8 steps, linear schedule: from t = 6 instead of 124). Each knot goes to the nearest index, nudged so
    the indices stay distinct."""
    T = schedule.num_timesteps
    if not 1 <= n <= T:
        raise ValueError(f"number of sampling steps must be in 1..{T}, got {n}")
    if spacing == "trailing":
        return [int(round(T - i * T / n)) - 1 for i in range(n)]
    if spacing != "logsnr":
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    lam = schedule.log_snr()
    lo, hi = float(lam[T - 1]), float(lam[0])
    ts = [int((lam - (lo + (hi - lo) * i / n)).abs().argmin()) for i in range(n)]  # knot 0 is lambda(T-1) itself
    for i in range(1, n):  # distinct and descending: push down, then (if that ran below 0) back up
        ts[i] = min(ts[i], ts[i - 1] - 1)
    ts[-1] = max(ts[-1], 0)
    for i in range(n - 2, -1, -1):
        ts[i] = max(ts[i], ts[i + 1] + 1)
    return ts


class Sampler:
    """Common part: the schedule, ``add_noise``, ``set_timesteps`` (``spacing``: 'trailing', which
    always starts at the last timestep T-1, Lin et al. 2024, table 2; or 'logsnr', see
    ``spaced_timesteps``) and ``prev(t)``."""

    name = "base"

    def __init__(self, schedule: NoiseSchedule, clip_x0: bool = True, spacing: str = "trailing"):
        self.schedule, self.clip_x0, self.spacing = schedule, clip_x0, spacing
        self.set_timesteps(schedule.num_timesteps)  # an unknown spacing fails here (spaced_timesteps)

    def add_noise(self, x0, eps, t):
        return self.schedule.add_noise(x0, eps, t)

    def set_timesteps(self, n: int) -> None:
        ts = spaced_timesteps(self.schedule, n, self.spacing)
        self.timesteps = ts
        self._prev = dict(zip(ts, ts[1:] + [-1]))
        self.reset()

    def reset(self) -> None:
        """Forget multistep history (called by ``set_timesteps``)."""

    def prev(self, t: int) -> int:
        return self._prev[int(t)]

    def x0(self, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        x0 = self.schedule.predict_x0(x, eps, t)
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        raise NotImplementedError


class DDPMSampler(Sampler):
    """Ancestral sampling from the posterior q(x_{t'} | x_t, x0_hat) (Ho et al. 2020, eq. 6-7), on any
    subsequence of timesteps (betas re-derived as 1 - alpha_bar_t / alpha_bar_t', Nichol & Dhariwal
    2021, sec. 4). With all T steps this is Algorithm 2."""

    name = "ddpm"

    def step(self, eps, t, x, generator=None):
        t = int(t)
        tp = self.prev(t)
        ab, ab_prev = self.schedule.ab(t), self.schedule.ab(tp)
        beta = 1 - ab / ab_prev
        x0 = self.x0(eps, t, x)
        # eq. 7: posterior mean  mu = sqrt(ab') beta / (1 - ab) x0 + sqrt(1 - beta) (1 - ab') / (1 - ab) x_t
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
        if tp < 0:
            return mean
        var = beta * (1 - ab_prev) / (1 - ab)  # eq. 7: beta_tilde
        return mean + math.sqrt(var) * randn(x.shape, generator, x.device, x.dtype)


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, eq. 12): x_t' = sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab') / (1 - ab)) sqrt(1 - ab / ab') (eq. 16); eta = 0 is deterministic."""

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, clip_x0: bool = True, spacing: str = "trailing"):
        self.eta = eta
        super().__init__(schedule, clip_x0, spacing)

    def step(self, eps, t, x, generator=None):
        t = int(t)
        tp = self.prev(t)
        ab, ab_prev = self.schedule.ab(t), self.schedule.ab(tp)
        x0 = self.x0(eps, t, x)
        if self.clip_x0:  # re-derive eps from the clipped x0 so the two stay consistent
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
        out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0 and tp >= 0:
            out = out + sigma * randn(x.shape, generator, x.device, x.dtype)
        return out


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M), multistep second order in the data prediction (Lu et al. 2022, Algorithm 2).

    With alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda' - lambda:
        x' = (sigma' / sigma) x - alpha' (e^{-h} - 1) D,
    D = x0 (first step, and the last step: lower order final) or, with r = h_last / h,
    D = (1 + 1 / (2r)) x0 - 1 / (2r) x0_last. Deterministic (``generator`` unused).
    """

    name = "dpm++2m"

    def reset(self):
        self._x0_last, self._h_last = None, None

    @staticmethod
    def _alpha_sigma_lambda(ab: float) -> tuple[float, float, float]:
        a, s = math.sqrt(ab), math.sqrt(max(1 - ab, 0.0))
        return a, s, (math.log(a / s) if s > 0 else math.inf)

    def step(self, eps, t, x, generator=None):
        t = int(t)
        tp = self.prev(t)
        a, s, lam = self._alpha_sigma_lambda(self.schedule.ab(t))
        a_p, s_p, lam_p = self._alpha_sigma_lambda(self.schedule.ab(tp))
        x0 = self.x0(eps, t, x)
        if tp < 0:  # final step to t = 0 (sigma' = 0): the update reduces to x' = D; use first order
            self.reset()
            return x0
        h = lam_p - lam
        d = x0
        if self._x0_last is not None:
            r = self._h_last / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self._x0_last
        self._x0_last, self._h_last = x0, h
        return (s_p / s) * x - a_p * math.expm1(-h) * d


class UniPCSampler(DPMSolverPP2MSampler):
    """UniPC (Zhao et al. 2023) in the data prediction with B(h) = e^{-h} - 1 ("bh2"): a multistep
    predictor UniP-p and, at no extra network call, a corrector UniC-p that redoes each step once the
    network has seen its end point, using that x0 too. Each call ``step(eps, t, x)`` first corrects x
    (the predictor's output of the previous call, at which ``eps`` was evaluated), then predicts the
    next point from the corrected x. With alpha, sigma, lambda as in DPM-Solver++ and h = lambda' - lambda,
    the update from (x_s, D_0 = x0 at s, D_k = x0 at earlier knots, r_k = (lambda_k - lambda_s) / h) is

        x' = (sigma' / sigma) x_s - alpha' (e^{-h} - 1) D_0 - alpha' B(h) sum_k rho_k (D_k - D_0) / r_k,

    the rho solving the small system R rho = b of the paper's Algorithm 1 (order 2: rho = 1/2, which
    makes UniP-2 exactly DPM-Solver++(2M)). The corrector adds the new end point (r = 1) to the sum.
    The last step, to the clean image, is first order (it returns x0). Deterministic."""

    name = "unipc"
    order = 2

    def reset(self):
        self._hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) at the last ``order`` knots, newest last
        self._x_last, self._start = None, None  # the (corrected) x the last prediction started from; its (lambda, sigma)

    def _update(self, x: torch.Tensor, lam_s: float, sig_s: float, a_t: float, sig_t: float, lam_t: float,
                d_t: torch.Tensor | None = None) -> torch.Tensor:
        """UniP (``d_t`` None) or UniC (``d_t``: x0 at the end point) from x at knot s (lambda_s, sigma_s),
        whose x0 is ``self._hist[-1]``, the earlier entries being the older knots."""
        h = lam_t - lam_s
        d0 = self._hist[-1][1]
        rks = [(lam_k - lam_s) / h for lam_k, _ in self._hist[:-1]]
        diffs = [(d_k - d0) / r for (_, d_k), r in zip(self._hist[:-1], rks)]
        if d_t is not None:
            rks, diffs = rks + [1.0], diffs + [d_t - d0]
        b_h = math.expm1(-h)  # e^{-h} - 1: the first-order coefficient, and B(h) ("bh2")
        out = (sig_t / sig_s) * x - a_t * b_h * d0
        n = len(rks)
        if n == 0:
            return out
        if n == 1:
            rhos = [0.5]
        else:  # R_ij = r_j^(i-1), b_i = i! phi_{i+1}(h) / B(h), phi by the recursion of the paper
            b, phi, fact = [], b_h / -h - 1, 1
            for i in range(1, n + 1):
                b.append(phi * fact / b_h)
                fact *= i + 1
                phi = phi / -h - 1 / fact
            R = torch.tensor([[r ** (i - 1) for r in rks] for i in range(1, n + 1)], dtype=torch.float64)
            rhos = torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()
        return out - a_t * b_h * sum(rho * d for rho, d in zip(rhos, diffs))

    def step(self, eps, t, x, generator=None):
        t = int(t)
        tp = self.prev(t)
        a, s, lam = self._alpha_sigma_lambda(self.schedule.ab(t))
        x0 = self.x0(eps, t, x)
        if tp < 0:  # final step to the clean image: x' = x0 (first order; a correction of x would not reach it)
            self.reset()
            return x0
        if self._x_last is not None:  # UniC: redo the step that led here, now knowing x0 at its end
            x = self._update(self._x_last, *self._start, a, s, lam, d_t=x0)
        self._hist = (self._hist + [(lam, x0)])[-self.order:]
        self._x_last, self._start = x, (lam, s)
        a_p, s_p, lam_p = self._alpha_sigma_lambda(self.schedule.ab(tp))
        return self._update(x, lam, s, a_p, s_p, lam_p)


class UniPC3Sampler(UniPCSampler):
    """UniPC with a third-order predictor (two earlier x0s) and its corrector."""

    name = "unipc3"
    order = 3


SAMPLERS = {c.name: c for c in (DDPMSampler, DDIMSampler, DPMSolverPP2MSampler, UniPCSampler, UniPC3Sampler)}


def make_sampler(name: str, schedule: NoiseSchedule, spacing: str = "trailing") -> Sampler:
    """``ddpm`` | ``ddim`` | ``dpm++2m`` on ``schedule``, timesteps spaced by ``spacing`` (``SPACINGS``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](schedule, spacing=spacing)
