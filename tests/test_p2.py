"""Problem 2: U-Net / GAN shapes, noise schedule and samplers, guidance, training, hw2_2.sh end to end."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.data import to_uint8
from common.errors import UserError
from common.training import load_checkpoint, read_jsonl
from p2_diffusion_acgan import inference as p2inference
from p2_diffusion_acgan import train as p2train
from p2_diffusion_acgan.config import ACGANConfig, SAGANConfig
from p2_diffusion_acgan.diffusion import diffusion_loss, guided_eps, sample
from p2_diffusion_acgan.gans import build_gan
from p2_diffusion_acgan.inference import Generator, default_checkpoint, digit_labels_and_names
from p2_diffusion_acgan.model import (ACGANDiscriminator, ACGANGenerator, SAGANDiscriminator, SAGANGenerator,
                                      SelfAttention, UNet)
from p2_diffusion_acgan.schedulers import (DDIMSampler, NoiseSchedule, SAMPLERS, make_sampler, per_image_generators,
                                           spaced_timesteps)
from tests.conftest import needs_shared

REPO = Path(__file__).resolve().parents[1]
TINY_UNET = dict(base_channels=8, channel_mults=(1, 1, 1), num_res_blocks=1, attn_levels=(2,), dropout=0.0)
TINY_ARGS = ["--base-channels", "8", "--channel-mults", "1", "1", "1", "--dropout", "0", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: on a shared 2-core machine two threads are often several times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_unet(seed: int = 0) -> UNet:
    """A tiny U-Net whose zero-initialised layers are randomised (as after training: eps depends on y)."""
    torch.manual_seed(seed)
    m = UNet(**TINY_UNET)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv2d) and not mod.weight.any():
            torch.nn.init.normal_(mod.weight, std=0.1)
    return m.eval()


# ----------------------------------------------------------------------------- shapes
def test_unet_shapes_and_null_class():
    m = tiny_unet()
    x = torch.randn(3, 3, 28, 28)
    eps = m(x, torch.tensor([0, 500, 999]), torch.tensor([0, 9, 10]))  # 10 = null class
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert m.class_emb.num_embeddings == 11
    with pytest.raises(IndexError):
        m(x, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 11]))


def test_attention_cpu_path_matches_fused_kernel():
    torch.manual_seed(0)
    a = SelfAttention(16)
    torch.nn.init.normal_(a.proj.weight)
    x = torch.randn(2, 16, 7, 7)
    q, k, v = a.qkv(a.norm(x)).reshape(2, 3, a.heads, 4, 49).unbind(1)
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    expect = x + a.proj(ref.transpose(-1, -2).reshape(2, 16, 7, 7))
    torch.testing.assert_close(a(x), expect, atol=1e-5, rtol=1e-4)


def test_gan_shapes_and_multi_hot_conditions():
    z, y = torch.randn(4, 100), torch.tensor([0, 3, 7, 9])
    for G, D, acgan in ((ACGANGenerator(channels=8), ACGANDiscriminator(channels=8), True),
                        (SAGANGenerator(channels=8), SAGANDiscriminator(channels=8), False)):
        x = G(z, y)
        assert x.shape == (4, 3, 28, 28) and x.min() >= -1 and x.max() <= 1
        if acgan:
            adv, cls = D(x)
            assert adv.shape == (4,) and cls.shape == (4, 10)
        else:
            multi = torch.zeros(4, 10)
            multi[:, [1, 4]] = 1  # multi-hot: two classes at once
            assert D(x, y).shape == (4,) and D(x, multi).shape == (4,)
            assert G(z, multi).shape == (4, 3, 28, 28)
            # the condition matters: one-hot of y equals int labels, a different condition does not
            G.eval()
            torch.testing.assert_close(G(z, y), G(z, torch.nn.functional.one_hot(y, 10).float()))
            assert not torch.allclose(G(z, y), G(z, multi))


def test_sagan_projection_discriminator():
    """d_projection adds <embed(y), pooled features>: the same weights score the same image differently
    per class, and without it the projection layer does not exist (old D checkpoints still load)."""
    torch.manual_seed(0)
    x, y0, y1 = torch.randn(3, 3, 28, 28), torch.tensor([0, 0, 0]), torch.tensor([5, 5, 5])
    plain, proj = SAGANDiscriminator(channels=8), SAGANDiscriminator(channels=8, projection=True)
    assert plain.proj is None and not any(k.startswith("proj") for k in plain.state_dict())
    proj.load_state_dict(plain.state_dict(), strict=False)
    proj.eval(), plain.eval()
    with torch.no_grad():
        h_term = proj(x, y0) - plain(x, y0)  # the projection term alone
        assert h_term.shape == (3,) and h_term.abs().min() > 0
        assert not torch.allclose(proj(x, y0) - plain(x, y0), proj(x, y1) - plain(x, y1))
    with pytest.raises(UserError, match="d_projection is a sagan option"):
        build_gan(ACGANConfig(d_projection=True))


def test_acgan_conditional_batchnorm():
    """g_cond_bn: per-class gain/bias after the conv BatchNorms. It starts as the plain G (gain 1,
    bias 0), a class's gain changes only that class's images, and the plain G keeps its weight names
    (shipped checkpoints load)."""
    from p2_diffusion_acgan.config import build_generator
    from p2_diffusion_acgan.model import ConditionalBatchNorm2d
    torch.manual_seed(0)
    plain, _ = build_gan(ACGANConfig(g_channels=8, d_channels=8))
    cond, _ = build_gan(ACGANConfig(g_channels=8, d_channels=8, g_cond_bn=True))
    assert "net.1.weight" in plain.state_dict() and not any("gain" in k for k in plain.state_dict())
    assert cond.state_dict()["net.1.gain.weight"].shape == (10, 16)
    assert sum(isinstance(m, ConditionalBatchNorm2d) for m in cond.modules()) == 2
    shared = {k: v for k, v in plain.state_dict().items() if k in cond.state_dict()}  # all but the BNs
    assert len(shared) == len(cond.state_dict()) - 4 * 2 - 2  # BN stats + gain/bias, counter
    cond.load_state_dict(shared, strict=False)
    z, y = torch.randn(6, 100), torch.tensor([0, 3, 3, 5, 7, 9])
    torch.testing.assert_close(cond(z, y), plain(z, y))  # train-mode BN: same batch statistics
    cond.eval(), plain.eval()  # running statistics (updated alike): no batch coupling between images
    torch.testing.assert_close(cond(z, y), plain(z, y))
    with torch.no_grad():
        cond.net[1].gain.weight[3] *= 2.0
    changed = (cond(z, y) - plain(z, y)).flatten(1).abs().amax(1) > 1e-4
    assert changed.tolist() == [False, True, True, False, False, False]
    rebuilt = build_generator("p2_acgan", {"g_channels": 8, "g_cond_bn": True})
    rebuilt.load_state_dict(cond.state_dict())  # inference rebuilds the same G from the saved config
    with pytest.raises(UserError, match="g_cond_bn is an acgan option"):
        build_gan(SAGANConfig(g_cond_bn=True))


def test_sagan_class_head_follows_aux_weight():
    """aux_weight > 0 gives the SAGAN D an ACGAN-style class head: (logit, class logits); the adversarial
    logit is the same function of the shared weights as without the head."""
    torch.manual_seed(0)
    G, D = build_gan(SAGANConfig(g_channels=8, d_channels=8, aux_weight=1.0))
    _, D0 = build_gan(SAGANConfig(g_channels=8, d_channels=8))
    assert D0.cls is None and D.cls is not None
    D0.load_state_dict({k: v for k, v in D.state_dict().items() if not k.startswith("cls.")})
    D.eval(), D0.eval()
    x, y = G(torch.randn(3, 100), torch.tensor([1, 2, 3])), torch.tensor([1, 2, 3])
    with torch.no_grad():
        adv, cls = D(x, y)
        assert adv.shape == (3,) and cls.shape == (3, 10)
        torch.testing.assert_close(adv, D0(x, y))


def test_sagan_blind_class_head_reads_the_image_only():
    """d_head_blind: the class head reads a pass with the condition zeroed, so its logits do not change
    with the condition (the sighted head's do); same weights, same adversarial logit; rebuilt from the
    saved config; an ACGAN option error."""
    from p2_diffusion_acgan.config import build_discriminator
    torch.manual_seed(0)
    G, D = build_gan(SAGANConfig(g_channels=8, d_channels=8, aux_weight=1.0, d_projection=True))
    blind = build_discriminator("p2_sagan", {"d_channels": 8, "aux_weight": 1.0, "d_projection": True,
                                             "d_head_blind": True})
    blind.load_state_dict(D.state_dict())  # no new parameters: a sighted D's weights load as they are
    D.eval(), blind.eval()
    x = G(torch.randn(4, 100), torch.tensor([1, 2, 3, 4])).detach()
    with torch.no_grad():
        adv_a, cls_a = blind(x, torch.tensor([1, 2, 3, 4]))
        adv_b, cls_b = blind(x, torch.tensor([7, 7, 0, 9]))
        torch.testing.assert_close(cls_a, cls_b)
        assert (adv_a - adv_b).abs().max() > 1e-6  # the adversarial logit still sees the condition
        torch.testing.assert_close(adv_a, D(x, torch.tensor([1, 2, 3, 4]))[0])
        _, seen_a = D(x, torch.tensor([1, 2, 3, 4]))
        _, seen_b = D(x, torch.tensor([7, 7, 0, 9]))
        assert (seen_a - seen_b).abs().max() > 1e-6
        # class_logits (ranking candidates) gives the head's logits without the unused pass
        torch.testing.assert_close(blind.class_logits(x, torch.tensor([7, 7, 0, 9])), cls_a)
        torch.testing.assert_close(D.class_logits(x, torch.tensor([7, 7, 0, 9])), seen_b)
    with pytest.raises(UserError, match="d_head_blind is a sagan option"):
        build_gan(ACGANConfig(d_head_blind=True))


# ----------------------------------------------------------------------------- schedule / samplers
def test_add_noise_known_values():
    s = NoiseSchedule(1000, "linear")
    x0, eps = torch.rand(4, 3, 28, 28) * 2 - 1, torch.randn(4, 3, 28, 28)
    xt = s.add_noise(x0, eps, torch.zeros(4, dtype=torch.long))
    assert (xt - x0).abs().max() < 0.05  # alpha_bar_0 = 1 - 1e-4
    assert math.isclose(float(s.alpha_bar[0]), 1 - 1e-4, rel_tol=1e-9)
    t = torch.tensor([0, 10, 500, 999])
    ab = s.alpha_bar[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(s.add_noise(x0, eps, t), ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    assert float(s.alpha_bar[-1]) < 1e-4  # nearly pure noise at T
    c = NoiseSchedule(1000, "cosine")
    assert (c.add_noise(x0, eps, torch.zeros(4, dtype=torch.long)) - x0).abs().max() < 0.05


def test_set_timesteps_trailing():
    smp = DDIMSampler(NoiseSchedule(1000))
    smp.set_timesteps(4)
    assert smp.timesteps == [999, 749, 499, 249]
    assert [smp.prev(t) for t in smp.timesteps] == [749, 499, 249, -1]
    smp.set_timesteps(1000)
    assert smp.timesteps[0] == 999 and smp.timesteps[-1] == 0 and len(set(smp.timesteps)) == 1000


@pytest.mark.parametrize("n", [1, 2, 8, 20, 300, 1000])
def test_logsnr_spacing_is_uniform_in_log_snr_and_distinct(n):
    sch = NoiseSchedule(1000)
    ts = spaced_timesteps(sch, n, "logsnr")
    assert len(ts) == n and ts[0] == 999 and all(a > b >= 0 for a, b in zip(ts, ts[1:]))
    if n == 1000:
        assert ts == list(range(999, -1, -1))
    if n == 8:  # knots 1.2 apart in lambda (from lambda(999) = -5.06 up to 3.4; lambda(0) = 4.6 is the clean end)
        lam = sch.log_snr()[ts]
        gaps = lam[1:] - lam[:-1]
        assert float(lam[0]) == pytest.approx(-5.06, abs=0.01) and float(lam[-1]) == pytest.approx(3.4, abs=0.1)
        assert float(gaps.min()) > 1.1 and float(gaps.max()) < 1.3
        assert ts[-1] < spaced_timesteps(sch, 8, "trailing")[-1] / 4  # the last step starts from far less noise
    smp = make_sampler("dpm++2m", sch, spacing="logsnr")
    smp.set_timesteps(n)
    assert smp.timesteps == ts and smp.prev(ts[-1]) == -1
    with pytest.raises(ValueError, match="spacing 'uniform'"):
        make_sampler("ddim", sch, spacing="uniform")


@pytest.mark.parametrize("name,steps,std_tol,spacing", [("ddpm", 1000, 0.03, "trailing"), ("ddpm", 100, 0.06, "trailing"),
                                                        ("ddim", 50, 0.06, "trailing"), ("dpm++2m", 20, 0.04, "trailing"),
                                                        ("dpm++2m", 8, 0.04, "logsnr"), ("ddim", 50, 0.06, "logsnr"),
                                                        ("unipc", 8, 0.04, "logsnr"), ("unipc3", 20, 0.04, "trailing")])
def test_samplers_recover_gaussian_data_with_exact_eps(name, steps, std_tol, spacing):
    """Data x0 ~ N(mu, s^2): the exact eps(x_t) is known in closed form; the sampler must give N(mu, s^2)."""
    mu, s = 0.3, 0.5
    sch = NoiseSchedule(1000, "linear")
    smp = SAMPLERS[name](sch, clip_x0=False, spacing=spacing)
    smp.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    for t in smp.timesteps:
        ab = sch.ab(t)
        eps = math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * s * s + 1 - ab)
        x = smp.step(eps, t, x, generator=g)
    assert abs(x.mean().item() - mu) < 0.03
    assert abs(x.std().item() - s) < std_tol


def _ode_error(name: str, steps: int) -> float:
    """Gaussian data N(mu, s^2), exact eps: the probability-flow ODE keeps z = (x_t - alpha mu) /
    sqrt(alpha^2 s^2 + sigma^2), so x_t is known everywhere. The sampler's largest error at t = 499,
    a knot of every trailing spacing with 10 | steps."""
    mu, s = 0.3, 0.5
    sch = NoiseSchedule(1000, "linear")
    smp = SAMPLERS[name](sch, clip_x0=False, spacing="trailing")
    smp.set_timesteps(steps)
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = (x - math.sqrt(sch.ab(999)) * mu) / math.sqrt(sch.ab(999) * s * s + 1 - sch.ab(999))
    for t in smp.timesteps[:smp.timesteps.index(499)]:
        ab = sch.ab(t)
        x = smp.step(math.sqrt(1 - ab) * (x - math.sqrt(ab) * mu) / (ab * s * s + 1 - ab), t, x)
    ab = sch.ab(499)
    return (x - (math.sqrt(ab) * mu + math.sqrt(ab * s * s + 1 - ab) * z)).abs().max().item()


def test_sampler_orders_of_accuracy():
    """Halving the step halves DDIM's error (order 1), quarters DPM-Solver++(2M)'s (order 2); UniPC's
    corrector adds one order (UniPC-2: 3, UniPC-3: 4; measured ratios 7.0 and 14.8)."""
    for name, order in (("ddim", 1), ("dpm++2m", 2), ("unipc", 3), ("unipc3", 4)):
        ratio = _ode_error(name, 20) / _ode_error(name, 40)
        assert 0.75 * 2 ** order < ratio < 1.25 * 2 ** order, (name, ratio)
    errors = [_ode_error(n, 20) for n in ("ddim", "dpm++2m", "unipc", "unipc3")]
    assert errors == sorted(errors, reverse=True), errors


def test_unipc_predictor_is_dpm_solver_pp_2m_before_its_corrector():
    """UniP-2 with B(h) = e^{-h} - 1 is DPM-Solver++(2M): the first step agrees; from the second call on the
    corrector (which needs the x0 at the end of a step) makes UniPC differ."""
    sch = NoiseSchedule(1000)
    dpm, uni = make_sampler("dpm++2m", sch, "logsnr"), make_sampler("unipc", sch, "logsnr")
    dpm.set_timesteps(6)
    uni.set_timesteps(6)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 4, 4, generator=g)
    xd = xu = x
    for i, t in enumerate(dpm.timesteps):
        eps = torch.randn(x.shape, generator=g) * 0.5 + 0.5 * x  # any eps: the same for both
        xd, xu = dpm.step(eps, t, xd), uni.step(eps, t, xu)
        if i == 0:  # first order on both
            torch.testing.assert_close(xu, xd, atol=1e-6, rtol=0)
        elif i == 1:  # UniC corrected the first step: x at knot 1 moved, so the prediction from it differs
            assert (xu - xd).abs().max() > 1e-4
        xd = xu  # feed both the same state, so each step compares the update alone
    assert uni._hist == [] and uni._x_last is None  # the final step resets the multistep state


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_deterministic_and_batch_independent(name):
    m = tiny_unet()
    sch = NoiseSchedule(1000)
    y = torch.tensor([0, 3, 5, 9])

    def run(lo, hi):
        return sample(m, make_sampler(name, sch), y[lo:hi], 1.5, 6, per_image_generators(7, hi - lo, start=lo))

    whole = run(0, 4)
    torch.testing.assert_close(whole, run(0, 4), atol=0, rtol=0)  # same seeds, same images
    parts = torch.cat([run(0, 1), run(1, 3), run(3, 4)])
    torch.testing.assert_close(whole, parts, atol=1e-4, rtol=1e-4)  # independent of the batch
    assert whole.shape == (4, 3, 28, 28) and whole.abs().max() <= 1
    other = sample(m, make_sampler(name, sch), y, 1.5, 6, per_image_generators(8, 4))
    assert (whole - other).abs().max() > 0.1  # another seed, other images


def test_guidance_w0_is_the_conditional_prediction():
    m = tiny_unet()
    x, t, y = torch.randn(4, 3, 28, 28), torch.tensor([10, 200, 500, 900]), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        eps_c = m(x, t, y)
        eps_u = m(x, t, torch.full_like(y, 10))
        torch.testing.assert_close(guided_eps(m, x, t, y, 0.0), eps_c, atol=0, rtol=0)  # shortcut path
        torch.testing.assert_close(guided_eps(m, x, t, y, 0.0, batched=True), eps_c, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(guided_eps(m, x, t, y, 2.0), 3 * eps_c - 2 * eps_u, atol=1e-5, rtol=1e-5)
        assert (eps_c - eps_u).abs().max() > 1e-3  # the class embedding changes the prediction


def test_autoguidance_term_next_to_classifier_free_guidance():
    m, guide = tiny_unet(), tiny_unet(seed=1)
    x, t, y = torch.randn(2, 3, 28, 28), torch.tensor([100, 700]), torch.tensor([3, 8])
    with torch.no_grad():
        eps_c, eps_g, eps_u = m(x, t, y), guide(x, t, y), m(x, t, torch.full_like(y, 10))
        torch.testing.assert_close(guided_eps(m, x, t, y, 0.0, guide=guide, guide_weight=1.5),
                                   2.5 * eps_c - 1.5 * eps_g, atol=1e-5, rtol=1e-5)  # pure autoguidance
        torch.testing.assert_close(guided_eps(m, x, t, y, 2.0, guide=guide, guide_weight=0.5),
                                   3.5 * eps_c - 2.0 * eps_u - 0.5 * eps_g, atol=1e-5, rtol=1e-5)  # both terms
        torch.testing.assert_close(guided_eps(m, x, t, y, 1.5, guide=m, guide_weight=1.0),
                                   guided_eps(m, x, t, y, 1.5), atol=1e-5, rtol=1e-5)  # self-guided: no push
        torch.testing.assert_close(guided_eps(m, x, t, y, 1.5, guide=guide), guided_eps(m, x, t, y, 1.5),
                                   atol=0, rtol=0)  # weight 0: the guide is not even run
        assert (eps_c - eps_g).abs().max() > 1e-3
    sch, gens = NoiseSchedule(1000), lambda: per_image_generators(0, 2)
    run = lambda w=0.0, **kw: sample(m, DDIMSampler(sch), y, w, 4, gens(), precision="fp32", **kw)  # noqa: E731
    assert (run(guide=guide, guide_weight=2.0) - run()).abs().max() > 1e-3
    assert (run(2.0, guide=guide, guide_weight=1.0) - run(2.0)).abs().max() > 1e-3
    torch.testing.assert_close(run(guide=m, guide_weight=2.0), run(), atol=1e-4, rtol=0)


def test_guidance_interval():
    m, sch, y = tiny_unet(), NoiseSchedule(1000), torch.tensor([2, 8])

    def run(w, interval=None):
        return sample(m, DDIMSampler(sch), y, w, 4, per_image_generators(0, 2), guidance_interval=interval)

    torch.testing.assert_close(run(3.0, (2000, 3000)), run(0.0), atol=1e-6, rtol=0)  # never applied
    torch.testing.assert_close(run(3.0, (0, 999)), run(3.0), atol=1e-6, rtol=0)  # always applied
    assert (run(3.0, (600, 999)) - run(3.0)).abs().max() > 1e-3  # applied at the first two steps only


def test_sampling_precision(monkeypatch):
    from common import training
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(training, "cpu_bf16_is_faster", lambda: True)
    assert [training.resolve_precision(p, cpu) for p in ("auto", "fp32", "bf16")] == ["bf16", "fp32", "bf16"]
    assert training.resolve_precision("auto", cuda) == "fp16"
    monkeypatch.setattr(training, "cpu_bf16_is_faster", lambda: False)
    assert training.resolve_precision("auto", cpu) == "fp32"  # no native bf16: emulated bf16 would be slower
    with pytest.raises(UserError, match="'fp8'"):
        training.resolve_precision("fp8", cpu)
    m, sch, y = tiny_unet(), NoiseSchedule(1000), torch.tensor([1, 4, 9])
    dtypes = []
    m.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))

    def run(precision):
        return sample(m, make_sampler("dpm++2m", sch), y, 2.0, 4, per_image_generators(0, 3), precision=precision)

    a, b = run("fp32"), run("bf16")
    assert set(dtypes[:4]) == {torch.float32} and set(dtypes[4:]) == {torch.bfloat16}  # the U-Net ran in bf16
    assert a.dtype == b.dtype == torch.float32  # the sampler's arithmetic stays fp32
    assert (a - b).abs().max() > 0 and (a - b).abs().mean() < 0.05  # the same images up to bf16 rounding
    torch.testing.assert_close(run("bf16"), b, atol=0, rtol=0)  # and deterministic


def test_guided_forward_is_one_batched_call():
    m = tiny_unet()
    calls = []
    m.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    with torch.no_grad():
        guided_eps(m, torch.randn(3, 3, 28, 28), 50, torch.tensor([1, 2, 3]), 1.0)
    assert calls == [6]


# ----------------------------------------------------------------------------- training
@pytest.mark.slow
def test_diffusion_training_steps_lower_the_loss():
    torch.manual_seed(0)
    m = UNet(**TINY_UNET).train()
    sch = NoiseSchedule(1000)
    x0 = torch.rand(16, 3, 28, 28) * 0.2 - 0.9  # dark images with a bright square per class
    y = torch.arange(16) % 4
    for i in range(16):
        r = int(y[i]) * 6
        x0[i, :, r:r + 6, r:r + 6] = 0.9

    def eval_loss():
        with torch.no_grad():
            return diffusion_loss(m, sch, x0, y, 0.1, torch.Generator().manual_seed(123)).item()

    before = eval_loss()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = diffusion_loss(m, sch, x0, y, 0.1, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert math.isfinite(after) and after < 0.8 * before, (before, after)


def _run_train(argv):
    assert p2train.main(argv) == 0


def test_train_diffusion_cli_resume_and_checkpoint(tiny_digits, tmp_path):
    run = tmp_path / "run"
    base = ["--model", "diffusion", "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
            "--log-every", "1", "--sample-every", "0", *TINY_ARGS]
    _run_train(base + ["--max-steps", "2"])
    _run_train(base + ["--max-steps", "3"])  # resumes at step 2
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl")]
    assert steps == [1, 2, 3]
    with pytest.raises(UserError, match="does not match"):  # another architecture in the same run folder
        p2train.main(base + ["--max-steps", "4", "--base-channels", "16"])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["base_channels"] == 8 and cfg["max_steps"] == 3
    st = load_checkpoint(run / "last.pt")
    assert st["step"] == 3 and st["kind"] == "p2_diffusion_train"
    slim = load_checkpoint(run / "model.pt")
    assert slim["kind"] == "p2_diffusion" and all(v.dtype == torch.float16 for v in slim["model"].values()
                                                  if v.is_floating_point())


@pytest.mark.parametrize("model", ["acgan", "sagan"])
def test_train_gan_losses_finite_and_changing(model, tiny_digits, tmp_path):
    run = tmp_path / model
    _run_train(["--model", model, "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
                "--g-channels", "8", "--d-channels", "8", "--max-steps", "4", "--log-every", "1",
                "--sample-every", "4", "--threads", "1"])
    recs = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "train"]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for key in ("loss_D", "loss_G"):
        vals = [r[key] for r in recs]
        assert all(math.isfinite(v) for v in vals) and len(set(vals)) > 1
    if model == "acgan":
        assert all(math.isfinite(r["aux_D"]) for r in recs)
    assert (run / "samples" / "step_0000004.png").is_file()
    ck = load_checkpoint(run / "model.pt")
    assert ck["config"]["arch"] == model


# ----------------------------------------------------------------------------- inference
def _hw2_2(*args, **kw):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO / "hw2_2.sh"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, **kw)


def _check_outputs(out: Path):
    _, names = digit_labels_and_names()
    files = sorted(os.listdir(out))
    assert len(files) == 1000 and set(files) == set(names)
    assert "0_001.png" in files and "9_100.png" in files
    for n in ("0_001.png", "5_050.png", "9_100.png"):
        with Image.open(out / n) as im:
            assert im.size == (28, 28) and im.mode == "RGB"


@pytest.mark.slow
def test_hw2_2_end_to_end_diffusion(tiny_digits, tmp_path):
    run = tmp_path / "run"
    _run_train(["--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8", "--max-steps", "2",
                "--sample-every", "0", "--sample-steps", "2", *TINY_ARGS])
    out = tmp_path / "out" / "nested"  # created by the script
    r = _hw2_2(out, "--checkpoint", run / "model.pt", "--threads", "1", "--steps", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_outputs(out)
    # the full training state (last.pt, fp32 EMA) gives the same images as the shipped fp16 model.pt
    y, gens = torch.tensor([0, 7]), lambda: per_image_generators(0, 2)
    a = Generator(load_checkpoint(run / "last.pt")).generate(y, gens(), sampler="ddpm", steps=3, guidance=0.5)
    gen = Generator(load_checkpoint(run / "model.pt"))
    b = gen.generate(y, gens(), sampler="ddpm", steps=3, guidance=0.5)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)
    # the U-Net samples in channels_last (faster on the CPU); the contiguous network gives the same images
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in gen.net.parameters() if p.dim() == 4)
    gen.net.to(memory_format=torch.contiguous_format)
    assert all(p.is_contiguous() for p in gen.net.parameters())
    torch.testing.assert_close(gen.generate(y, gens(), sampler="ddpm", steps=3, guidance=0.5), b, atol=1e-4, rtol=0)
    # --spacing: the checkpoint's (logsnr, the config default) unless given; trailing visits other timesteps
    seen = {}
    for spacing in (None, "trailing", "logsnr"):
        ts = []
        gen.generate(y, gens(), steps=3, spacing=spacing, callback=lambda i, t, x: ts.append(t))
        seen[spacing] = ts
    assert seen[None] == seen["logsnr"] == spaced_timesteps(NoiseSchedule(), 3, "logsnr") and seen["trailing"] == [999, 666, 332]
    # a checkpoint saved before spacing existed samples as it always did (trailing)
    old = Generator({"kind": "p2_diffusion", "config": {k: v for k, v in gen.config.items() if k != "spacing"},
                     "model": gen.net.state_dict()})
    assert gen.diff_cfg.spacing == "logsnr" and old.diff_cfg.spacing == "trailing"
    out2 = tmp_path / "out_logsnr"
    r = _hw2_2(out2, "--checkpoint", run / "model.pt", "--threads", "1", "--steps", "2", "--spacing", "logsnr")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_outputs(out2)
    # 7_001.png is image 700 of the seeded run: generating it alone gives the same pixels
    alone = Generator(load_checkpoint(run / "model.pt")).generate(torch.tensor([7]), per_image_generators(0, 1, start=700),
                                                                  steps=1)
    png = torch.from_numpy(np.array(Image.open(out / "7_001.png"))).permute(2, 0, 1)
    assert (png.int() - to_uint8(alone[0]).int()).abs().max() <= 1
    # report figures from the same checkpoint
    spec = importlib.util.spec_from_file_location("p2_figures", REPO / "scripts" / "p2_figures.py")
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    figs = tmp_path / "figs"
    missing = tmp_path / "none.pt"
    with pytest.raises(UserError, match="none.pt"):
        fig.main(["--out", str(figs), "--diffusion", str(run / "model.pt"), "--acgan", str(missing)])
    fig.main(["--out", str(figs), "--diffusion", str(run / "model.pt"), "--steps", "5"])
    with Image.open(figs / "grid_diffusion.png") as im:
        assert im.size == (10 * 30 + 2, 10 * 30 + 2)  # 10x10 tiles of 28 + 2 px padding
    assert (figs / "reverse_process.png").is_file()
    gen = Generator(load_checkpoint(run / "model.pt"))
    logsnr = spaced_timesteps(NoiseSchedule(), 5, "logsnr")  # the run's spacing: its frames are at those timesteps
    assert fig.reverse_process_figure(gen, figs / "r.png", "ddim", 5) == [1000] + [t + 1 for t in logsnr[1:]] + [0]
    gen.diff_cfg.spacing = "trailing"
    assert fig.reverse_process_figure(gen, figs / "r.png", "ddim", 5) == [1000, 800, 600, 400, 200, 0]
    assert "UNet(" in (figs / "architecture_diffusion.txt").read_text()
    assert "SAGANAttention" in (figs / "architecture_sagan.txt").read_text()


@pytest.mark.slow
def test_hw2_2_end_to_end_acgan_and_errors(tiny_digits, tmp_path):
    run = tmp_path / "acgan"
    _run_train(["--model", "acgan", "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
                "--g-channels", "8", "--d-channels", "8", "--max-steps", "2", "--sample-every", "0", "--threads", "1"])
    out = tmp_path / "out"
    r = _hw2_2(out, "--model", "acgan", "--checkpoint", run / "model.pt", "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_outputs(out)
    first = (out / "4_010.png").read_bytes()
    assert p2inference.main([str(tmp_path / "again"), "--checkpoint", str(run / "model.pt"), "--batch-size", "300"]) == 0
    assert (tmp_path / "again" / "4_010.png").read_bytes() == first  # fixed per-image seeds, any batch size
    # truncation scales the same noise: psi = 1 is the default, another psi changes the images
    assert p2inference.main([str(tmp_path / "t1"), "--checkpoint", str(run / "model.pt"), "--truncation", "1"]) == 0
    assert (tmp_path / "t1" / "4_010.png").read_bytes() == first
    assert p2inference.main([str(tmp_path / "t5"), "--checkpoint", str(run / "model.pt"), "--truncation", "0.5"]) == 0
    assert (tmp_path / "t5" / "4_010.png").read_bytes() != first
    with pytest.raises(UserError, match="truncation"):
        p2inference.main([str(tmp_path / "x"), "--checkpoint", str(run / "model.pt"), "--truncation", "0"])
    # the shared GAN loop's full training state also works
    assert p2inference.main([str(tmp_path / "from_last"), "--model", "acgan", "--checkpoint", str(run / "last.pt")]) == 0
    # wrong model / missing checkpoint: one line, exit 2
    r = _hw2_2(tmp_path / "x", "--model", "sagan", "--checkpoint", run / "model.pt")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "acgan" in r.stderr
    with pytest.raises(UserError, match="nope.pt"):
        p2inference.main([str(tmp_path / "x"), "--checkpoint", str(tmp_path / "nope.pt")])


def test_pick_candidates_first_accepted_else_most_probable():
    p = torch.tensor([[0.50, 0.95, 0.10],   # candidate 0 of images 0, 1, 2
                      [0.97, 0.99, 0.30],   # candidate 1
                      [0.99, 0.20, 0.40]])  # candidate 2
    pick = p2inference.pick_candidates
    assert pick(p.log(), 0.9).tolist() == [1, 0, 2]  # first p >= 0.9; none for image 2: its most probable
    assert pick(p.log(), 1.0).tolist() == [2, 1, 2]  # accept_prob 1: always the most probable
    assert pick(p[:1].log(), 0.9).tolist() == [0, 0, 0]  # one candidate: itself


def test_gan_candidates_ranked_by_the_class_head(tiny_digits, tmp_path):
    run = tmp_path / "acgan"
    _run_train(["--model", "acgan", "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
                "--g-channels", "8", "--d-channels", "8", "--max-steps", "2", "--sample-every", "0", "--threads", "1"])
    gen = Generator(load_checkpoint(run / "last.pt"))  # a run's last.pt keeps D
    assert gen.critic is not None
    y = torch.tensor([3, 3, 7, 1, 0])
    gens = lambda start=0: per_image_generators(0, len(y), start)  # noqa: E731
    plain = gen.generate(y, gens())
    torch.testing.assert_close(gen.generate(y, gens(), candidates=1), plain)
    # K = 3 by hand: the i-th call draws the i-th noise of every image; keep the most probable under D's head
    g3 = gens()
    cands = [gen.generate(y, g3) for _ in range(3)]
    torch.testing.assert_close(cands[0], plain)  # the first candidate is the K = 1 image
    scores = torch.stack([p2inference.class_log_prob(gen.critic, c, y) for c in cands])
    best = torch.stack(cands)[scores.argmax(0), torch.arange(len(y))]
    torch.testing.assert_close(gen.generate(y, gens(), candidates=3), best)
    assert (scores.argmax(0) > 0).any()  # else the test could not tell ranking from the plain images
    # accept_prob: the first candidate whose p reaches it
    cut = float(scores[0].exp().median())
    idx = p2inference.pick_candidates(scores, cut)
    torch.testing.assert_close(gen.generate(y, gens(), candidates=3, accept_prob=cut),
                               torch.stack(cands)[idx, torch.arange(len(y))])
    # batch-independent: image 2 generated alone is the same
    alone = gen.generate(y[2:3], per_image_generators(0, 1, start=2), candidates=3)
    torch.testing.assert_close(alone[0], best[2])
    # a shipped model.pt keeps no D: K > 1 is a one-line error that says how to ship D
    with pytest.raises(UserError, match="--discriminator"):
        Generator(load_checkpoint(run / "model.pt")).generate(y, gens(), candidates=2)
    for bad, msg in ((["--candidates", "0"], "candidates"), (["--accept-prob", "1.5"], "accept-prob")):
        with pytest.raises(UserError, match=msg):
            p2inference.main([str(tmp_path / "x"), "--checkpoint", str(run / "last.pt"), *bad])
    # shipped with --discriminator (fp16 D) and a default K in its config: hw2_2.sh ranks by default
    import ship_checkpoint
    ship_checkpoint.ship(run / "model.pt", "p2_acgan", tmp_path / "ck", [], ["candidates=3"], "", run / "last.pt")
    shipped = load_checkpoint(tmp_path / "ck" / "p2_acgan.pt")
    assert shipped["D"]["cls_head.weight"].dtype == torch.float16 and shipped["config"]["candidates"] == 3
    out = tmp_path / "ranked"
    assert p2inference.main([str(out), "--checkpoint", str(tmp_path / "ck" / "p2_acgan.pt"), "--threads", "1"]) == 0
    g16 = Generator(shipped)
    y1 = torch.tensor([4])
    png = torch.from_numpy(np.array(Image.open(out / "4_010.png"))).permute(2, 0, 1)
    ref = g16.generate(y1, per_image_generators(0, 1, start=409))[0]
    assert (png.int() - to_uint8(ref).int()).abs().max() <= 1
    with pytest.raises(UserError, match="sagan"):  # D of another architecture
        ship_checkpoint.ship(run / "model.pt", "x", tmp_path / "ck", [], [], "", _sagan_run(tiny_digits, tmp_path))


def _sagan_run(tiny_digits, tmp_path) -> Path:
    run = tmp_path / "sagan"
    _run_train(["--model", "sagan", "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
                "--g-channels", "8", "--d-channels", "8", "--max-steps", "1", "--sample-every", "0", "--threads", "1"])
    return run / "last.pt"


def test_default_checkpoint_choice(tmp_path):
    with pytest.raises(UserError, match="python -m p2_diffusion_acgan.train --model diffusion"):
        default_checkpoint(None, tmp_path)
    path, hint = default_checkpoint("sagan", tmp_path)
    assert path == tmp_path / "p2_sagan.pt" and "--model sagan" in hint
    for m, acc in (("acgan", 0.99), ("sagan", 0.995)):
        (tmp_path / f"p2_{m}.pt").write_bytes(b"x")
        (tmp_path / f"p2_{m}.json").write_text(json.dumps({"accuracy": acc}))
    assert default_checkpoint(None, tmp_path)[0].name == "p2_sagan.pt"
    (tmp_path / "p2_diffusion.pt").write_bytes(b"x")  # no metrics JSON: ranks below measured ones
    assert default_checkpoint(None, tmp_path)[0].name == "p2_sagan.pt"
    (tmp_path / "p2_diffusion.json").write_text(json.dumps({"accuracy": 0.995}))  # tie: diffusion first
    assert default_checkpoint(None, tmp_path)[0].name == "p2_diffusion.pt"


def test_dry_run_smoke(tiny_digits, tmp_path, capsys):
    run = tmp_path / "dry"
    _run_train(["--dry-run", "--run-dir", str(run), "--data", str(tiny_digits), *TINY_ARGS])
    assert load_checkpoint(run / "last.pt")["step"] == 2
    assert json.loads((run / "config.json").read_text())["max_images"] == 256
    assert "diffusion: 100%" in capsys.readouterr().err  # the bar
    # background runs: --no-progress keeps the log free of bars (diffusion and the GANs)
    for model in ("diffusion", "acgan"):
        _run_train(["--model", model, "--dry-run", "--no-progress", "--run-dir", str(tmp_path / model),
                    "--data", str(tiny_digits), "--threads", "1"]
                   + (TINY_ARGS if model == "diffusion" else ["--g-channels", "8", "--d-channels", "8"]))
        assert load_checkpoint(tmp_path / model / "last.pt")["step"] == 2
        assert "it/s" not in capsys.readouterr().err, model


def test_bad_user_input_is_one_line_error(tiny_digits, tmp_path):
    with pytest.raises(UserError, match="sampler"):
        p2train.main(["--run-dir", str(tmp_path / "r"), "--data", str(tiny_digits), "--sampler", "euler"])
    with pytest.raises(UserError, match="missing"):
        p2train.main(["--run-dir", str(tmp_path / "r"), "--data", str(tmp_path / "missing")])
    with pytest.raises(UserError, match="steps"):
        p2inference.main([str(tmp_path / "o"), "--steps", "0"])


def test_missing_classifier_stops_training_before_it_starts(tiny_digits, tmp_path, monkeypatch):
    # with evaluation on, a missing course classifier is a one-line error before step 1, not at the
    # first evaluation after thousands of unsaved steps
    monkeypatch.setenv("HW2_CLASSIFIER", str(tmp_path / "gone" / "Classifier.pth"))
    for model in ("diffusion", "acgan"):
        with pytest.raises(UserError, match="gone/Classifier.pth"):
            p2train.main(["--model", model, "--run-dir", str(tmp_path / model), "--data", str(tiny_digits),
                          "--eval-every", "1000", "--threads", "1", "--no-progress"])
        assert not (tmp_path / model / "last.pt").exists()


@needs_shared("evaluators", "Classifier.pth")
def test_eval_hook_reports_accuracy():
    from p2_diffusion_acgan.evaluate import gan_eval_fn
    torch.manual_seed(0)
    G = ACGANGenerator(channels=8).eval()
    r = gan_eval_fn(G, 0)
    assert 0 <= r["accuracy"] <= 1 and 0 <= r["worst_digit_acc"] <= r["accuracy"]


def test_init_from_starts_a_new_run_from_shipped_weights(tiny_digits, tmp_path):
    base = ["--model", "diffusion", "--data", str(tiny_digits), "--batch-size", "8", "--sample-every", "0",
            *TINY_ARGS]
    _run_train(base + ["--run-dir", str(tmp_path / "a"), "--max-steps", "2"])
    shipped = load_checkpoint(tmp_path / "a" / "model.pt")
    _run_train(base + ["--run-dir", str(tmp_path / "b"), "--max-steps", "1", "--init-from", str(tmp_path / "a" / "model.pt"),
                       "--lr", "0"])  # lr 0: the weights stay the initial ones
    got = load_checkpoint(tmp_path / "b" / "model.pt")
    assert got["step"] == 1
    for k, v in shipped["model"].items():
        assert torch.equal(v, got["model"][k]), k
    with pytest.raises(UserError, match="does not fit"):
        p2train.main(base + ["--run-dir", str(tmp_path / "c"), "--max-steps", "1", "--base-channels", "16",
                             "--init-from", str(tmp_path / "a" / "model.pt")])
    with pytest.raises(UserError, match="not a diffusion model"):
        p2train.main(base + ["--run-dir", str(tmp_path / "d"), "--max-steps", "1", "--init-from", str(tmp_path / "a" / "last.pt")])


def test_accept_sweep_scores_the_images_hw2_2_would_write(tiny_digits, tmp_path):
    import p2_accept_sweep
    import ship_checkpoint

    from p2_diffusion_acgan.evaluate import classifier_accuracy
    run = tmp_path / "acgan"
    _run_train(["--model", "acgan", "--run-dir", str(run), "--data", str(tiny_digits), "--batch-size", "8",
                "--g-channels", "8", "--d-channels", "8", "--max-steps", "2", "--sample-every", "0", "--threads", "1"])
    ship_checkpoint.ship(run / "model.pt", "p2_acgan", tmp_path / "ck", [], [], "", run / "last.pt")
    ck = tmp_path / "ck" / "p2_acgan.pt"

    class Hash(torch.nn.Module):  # "classifies" by a hash of the pixels: every changed pick moves the accuracy
        def forward(self, x):
            return torch.nn.functional.one_hot((x.flatten(1).sum(1) * 1000).long() % 10, 10).float()
    clf = Hash()
    gen = Generator(load_checkpoint(ck))
    probs = [0.1, 1.0]
    rows = p2_accept_sweep.sweep(ck, 3, probs, classifier=clf)
    assert [r["accept_prob"] for r in rows] == probs
    for r, p in zip(rows, probs):
        x, y, _ = p2inference.generate_all(gen, 0, 250, candidates=3, accept_prob=p, progress=False)
        assert r["accuracy"] == classifier_accuracy(x, y, clf)["accuracy"]
        assert 0 <= r["mean_index"] <= 2
    assert rows[0]["accuracy"] != rows[1]["accuracy"]  # else the check above could not tell picks apart
    assert rows[1]["mean_index"] > rows[0]["mean_index"]  # the most probable lies further in than a low bar
    with pytest.raises(UserError, match="accept-prob"):
        p2_accept_sweep.main([str(ck), "--accept-probs", "0"])
    with pytest.raises(UserError, match="nope.pt"):
        p2_accept_sweep.main([str(tmp_path / "nope.pt")])


@pytest.mark.slow
def test_bench_p2_table_has_a_row_per_setting_with_its_spacing(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_p2", REPO / "scripts" / "bench_p2.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--checkpoints", str(tmp_path / "none"), "--out", str(tmp_path / "b"), "--threads", "1", "--device", "cpu",
            "--train-batch", "4", "--train-steps", "1", "--probe-batch", "4"]
    assert bench.main([*args, "--settings", "dpm++2m:8:trailing", "ddim:4", "--precision", "fp32"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| diffusion | ")]
    assert rows[-2].startswith("| diffusion | dpm++2m | 8 | trailing | fp32 | 2 | ") and "(est.)" in rows[-2]
    assert rows[-1].startswith("| diffusion | ddim | 4 | logsnr | fp32 | 2 | ")  # the default config's spacing
    assert bench.main([*args, "--settings", "unipc:4", "--precision", "fp32", "bf16", "fp32"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| diffusion | unipc | ")]
    assert [r.split(" | ")[4] for r in rows] == ["fp32", "bf16"]  # one row per precision, listed once
    with pytest.raises(UserError, match="'ddim:4:uniform'"):
        bench.main([*args, "--settings", "ddim:4:uniform"])


def test_dry_run_never_touches_the_default_run_folder(tiny_digits, tmp_path, monkeypatch):
    """A dry run writes to a throw-away folder; the real command afterwards starts fresh, not
    from the dry run's step with its settings (and an existing run refuses a dry run into it)."""
    from p3_dann.train import main as p3_main
    monkeypatch.chdir(tmp_path)
    _run_train(["--model", "acgan", "--dry-run", "--no-progress", "--data", str(tiny_digits), "--threads", "1",
                "--g-channels", "8", "--d-channels", "8"])
    assert p3_main(["--mode", "dann", "--dry-run", "--no-progress", "--data", str(tiny_digits)]) == 0
    assert not (tmp_path / "runs" / "p2_acgan").exists() and not (tmp_path / "runs" / "p3_mnistm_usps_dann").exists()
    dry = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert [n.split("_")[:2] for n in dry] == [["dryrun", "p2"], ["dryrun", "p3"]]
    with pytest.raises(UserError, match="not empty"):
        p2train.main(["--dry-run", "--run-dir", str(tmp_path / "runs" / dry[0]), "--data", str(tiny_digits)])


def test_generator_loads_an_autoguidance_checkpoint(tmp_path):
    import dataclasses

    from common.checkpoint import shipped_form
    from p2_diffusion_acgan.config import DiffusionConfig
    cfg = DiffusionConfig(base_channels=8, channel_mults=(1, 1, 1), dropout=0.0, sample_steps=2, guidance=1.0,
                          guide_weight=1.0)
    for name, seed in (("main.pt", 0), ("guide.pt", 1)):
        torch.save(shipped_form(dataclasses.asdict(cfg), tiny_unet(seed).state_dict(), 1, kind="p2_diffusion"),
                   tmp_path / name)
    gen = Generator(load_checkpoint(tmp_path / "main.pt"))
    y, gens = torch.tensor([0, 5]), lambda: per_image_generators(0, 2)
    cfg_img = gen.generate(y, gens(), precision="fp32")
    auto = gen.generate(y, gens(), precision="fp32", guide=str(tmp_path / "guide.pt"))
    assert (auto - cfg_img).abs().max() > 1e-3
    torch.testing.assert_close(gen.generate(y, gens(), precision="fp32", guide="none"), cfg_img, atol=0, rtol=0)
    G, _ = build_gan(ACGANConfig(g_channels=8, d_channels=8))
    torch.save(shipped_form(dataclasses.asdict(ACGANConfig(g_channels=8, d_channels=8)), G.state_dict(), 1,
                            kind="p2_acgan"), tmp_path / "gan.pt")
    with pytest.raises(UserError, match="autoguidance needs a p2_diffusion model"):
        gen.generate(y, gens(), guide=str(tmp_path / "gan.pt"))
    with pytest.raises(UserError, match="nope.pt"):
        gen.generate(y, gens(), guide=str(tmp_path / "nope.pt"))


def test_interrupted_diffusion_run_resumes_exactly(tiny_digits, tmp_path):
    """2 steps, stop, resume to 4 == 4 steps straight: batches (their place in the epoch), noise and
    weights all carry over."""
    base = ["--data", str(tiny_digits), "--batch-size", "8", "--sample-every", "0", "--save-every-min", "1000",
            "--no-progress", "--dropout", "0.1", *[a for a in TINY_ARGS if a not in ("--dropout", "0")]]
    _run_train(base + ["--run-dir", str(tmp_path / "straight"), "--max-steps", "4"])
    _run_train(base + ["--run-dir", str(tmp_path / "cut"), "--max-steps", "2"])
    _run_train(base + ["--run-dir", str(tmp_path / "cut"), "--max-steps", "4"])
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["ema"]["module"])
