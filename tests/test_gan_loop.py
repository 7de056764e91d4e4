"""common/gan.py: losses on constructed inputs, penalties, DiffAugment, and the loop (resume, NaN, SIGTERM,
ACGAN and projection-conditional variants) on tiny 8x8 models."""
import copy
import dataclasses
import json
import math
import os
import signal

import pytest
import torch
from torch import nn

from common.checkpoint import export_generator, generator_state_dict
from common.errors import UserError
from common.gan import (GANConfig, GANLoss, diff_augment, generate, gradient_penalty, init_weights, r1_penalty,
                        recompute_bn_stats, train_gan, validate_config)
from common.training import NonFiniteLoss, load_checkpoint, read_jsonl

Z, N_CLS, S = 8, 4, 8  # z dim, classes, image size


class TinyG(nn.Module):
    def __init__(self, n_classes: int = 0):
        super().__init__()
        self.emb = nn.Embedding(n_classes, Z) if n_classes else None
        self.net = nn.Sequential(nn.Linear(Z, 32), nn.ReLU(), nn.Linear(32, 3 * S * S), nn.Tanh())

    def forward(self, z, y=None):
        if self.emb is not None:
            z = z * self.emb(y)
        return self.net(z).view(-1, 3, S, S)


class TinyD(nn.Module):
    """Plain (logits (N, 1)), ACGAN (adv, class logits) or projection (D(x, c) with multi-hot c)."""

    def __init__(self, mode: str = "plain"):
        super().__init__()
        self.mode = mode
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * S * S, 32), nn.LeakyReLU(0.2))
        self.adv = nn.Linear(32, 1)
        self.cls = nn.Linear(32, N_CLS)
        self.nan = False

    def forward(self, x, c=None):
        h = self.body(x)
        out = self.adv(h)
        if self.nan:
            out = out * float("nan")
        if self.mode == "acgan":
            return out, self.cls(h)
        if self.mode == "proj":  # projection discriminator (Miyato & Koyama 2018): + <embed(c), h>
            out = out + (h[:, :N_CLS] * c).sum(1, keepdim=True)
        return out


class ProjG(TinyG):
    """Generator taking a multi-hot float condition (N, N_CLS)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N_CLS, Z)

    def forward(self, z, c=None):
        return self.net(z + self.lin(c)).view(-1, 3, S, S)


def make_data(conditional: str = "", n: int = 64, bs: int = 8, seed: int = 0, per_step: int = 1):
    """data(start_step): batch i depends only on (seed, i); ``per_step`` = D phases per step -> exact resume."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, S, S, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % N_CLS
    c = torch.nn.functional.one_hot(y, N_CLS).float()
    c[:, 0] = 1.0  # multi-hot

    def data(start):
        i = start * per_step
        while True:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + i))[:bs]
            i += 1
            yield (x[idx], y[idx]) if conditional == "label" else (x[idx], c[idx]) if conditional == "multi" else x[idx]
    return data


def cfg_(**kw) -> GANConfig:
    base = dict(z_dim=Z, batch_size=8, max_steps=4, log_every=1, sample_every=2, n_samples=8,
                save_every=2, device="cpu", ema_decay=0.9)
    base.update(kw)
    return GANConfig(**base)


def test_losses_on_known_logits():
    G, D = TinyG(), TinyD()
    zero = torch.zeros(4)
    big = torch.full((4,), 3.0)
    L = GANLoss(G, D, cfg_(loss="bce"))
    assert L.d_adv_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert L.g_adv_loss(zero).item() == pytest.approx(math.log(2))
    assert L.d_adv_loss(big, -big).item() == pytest.approx(2 * math.log1p(math.exp(-3)), rel=1e-5)
    L = GANLoss(G, D, cfg_(loss="hinge"))
    assert L.d_adv_loss(zero, zero).item() == pytest.approx(2.0)
    assert L.d_adv_loss(big, -big).item() == 0.0  # both margins satisfied
    assert L.g_adv_loss(big).item() == -3.0
    L = GANLoss(G, D, cfg_(loss="wgan"))
    assert L.d_adv_loss(big, zero).item() == -3.0
    L = GANLoss(G, D, cfg_(loss="lsgan"))
    assert L.d_adv_loss(torch.ones(4), zero).item() == 0.0
    assert GANLoss.aux_loss(torch.tensor([[10.0, -10.0]]), torch.tensor([0])).item() < 1e-4
    assert GANLoss.aux_loss(torch.tensor([[10.0, -10.0]]), torch.tensor([[1.0, 0.0]])).item() < 1e-4


def test_penalties_on_linear_critic():
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5

    def d_fn(x):  # D(x) = <w, x>: gradient w everywhere
        return x.flatten(1) @ w

    real, fake = torch.randn(6, 2, 1, 1), torch.randn(6, 2, 1, 1)
    assert gradient_penalty(d_fn, real, fake).item() == pytest.approx(16.0)  # (5 - 1)^2
    assert r1_penalty(d_fn, real).item() == pytest.approx(25.0)


def test_diff_augment():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16) * 2 - 1
    assert torch.equal(diff_augment(x, ""), x)
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        y = diff_augment(x, policy)
        assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x)
    y = diff_augment(x, "cutout")  # a 8x8 square (clipped at borders) is zeroed in every image
    frac = (y == 0).all(1).flatten(1).float().mean(1)
    assert (frac > 0.05).all() and (frac <= 0.25 + 1e-6).all()
    y = diff_augment(x, "translation")  # values are a subset of the image's values and 0 (padding)
    for i in range(4):
        assert set(y[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0.0}
    torch.manual_seed(1)
    a = diff_augment(x, "color,translation,cutout")
    torch.manual_seed(1)
    assert torch.equal(a, diff_augment(x, "color,translation,cutout"))
    xg = x.clone().requires_grad_(True)
    diff_augment(xg, "color,translation,cutout").sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    with pytest.raises(UserError, match="unknown DiffAugment op 'flip'"):
        diff_augment(x, "flip")


def test_validate_config():
    assert validate_config(cfg_(phases="D,D,G")) == ["D", "D", "G"]
    for bad, msg in ((dict(loss="nope"), "unknown loss"), (dict(phases="D,X"), "phases"),
                     (dict(phases="D"), "phases"), (dict(aux_weight=1.0), "ACGAN"), (dict(precision="fp8"), "precision")):
        with pytest.raises(UserError, match=msg):
            validate_config(cfg_(**bad))


def test_train_resume_is_exact(tmp_path):
    """4 steps straight == 2 steps, then the same command rerun with max_steps=4 (resumed)."""
    cfg = cfg_(loss="hinge", diffaug="color,translation", phases="D,G,G")
    torch.manual_seed(0)
    G1, D1 = TinyG(), TinyD()
    init = copy.deepcopy((G1.state_dict(), D1.state_dict()))  # state_dict() tensors alias the weights
    out = train_gan(G1, D1, make_data(), cfg, tmp_path / "a", progress=False)
    assert out["step"] == 4 and not out["stopped"]

    G2, D2 = TinyG(), TinyD()
    G2.load_state_dict(init[0]), D2.load_state_dict(init[1])
    train_gan(G2, D2, make_data(), dataclasses.replace(cfg, max_steps=2), tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 2
    G3, D3 = TinyG(), TinyD()  # fresh modules: everything must come from last.pt
    out = train_gan(G3, D3, make_data(), cfg, tmp_path / "b", progress=False)
    assert out["step"] == 4
    for a, b in zip(list(G1.state_dict().values()) + list(D1.state_dict().values()),
                    list(G3.state_dict().values()) + list(D3.state_dict().values())):
        assert torch.equal(a, b)
    ck_a, ck_b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for k in ck_a["ema"]["module"]:
        assert torch.equal(ck_a["ema"]["module"][k], ck_b["ema"]["module"][k])
    assert ck_a["opt_G"]["state"][0]["step"] == ck_b["opt_G"]["state"][0]["step"] == 8  # 2 G phases/step

    recs = [r for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss_D"]) and math.isfinite(r["loss_G"]) for r in recs)
    assert len({round(r["loss_D"], 6) for r in recs}) > 1  # losses change
    assert sorted(os.listdir(tmp_path / "b" / "samples")) == ["step_0000002.png", "step_0000004.png"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["phases"] == "D,G,G"
    assert sorted(os.listdir(tmp_path / "b")) == ["config.json", "last.pt", "metrics.jsonl", "samples"]


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = cfg_(max_steps=2)
    G, D = TinyG(), TinyD()
    train_gan(G, D, make_data(), cfg, tmp_path, progress=False)
    before = load_checkpoint(tmp_path / "last.pt")
    D.nan = True
    with pytest.raises(NonFiniteLoss, match=r"loss \w+ is nan at step 3; stopped, last good checkpoint kept"):
        train_gan(G, D, make_data(), dataclasses.replace(cfg, max_steps=6), tmp_path, progress=False)
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["step"] == 2 and torch.equal(after["G"]["net.0.weight"], before["G"]["net.0.weight"])
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["kind"] == "error"


def test_sigterm_saves_and_stops(tmp_path):
    def eval_fn(G_eval, step):
        assert not G_eval.training
        x = generate(G_eval, 5, Z, seed=1)
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would
        return {"score": float(x.mean()) + step}

    out = train_gan(TinyG(), TinyD(), make_data(), cfg_(max_steps=10, eval_every=1, best_metric="score",
                                                          best_mode="max"), tmp_path, eval_fn=eval_fn, progress=False)
    assert out["stopped"] and out["step"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 2 and best["best"]["step"] == 2
    evals = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]


def test_acgan_and_projection_cgan(tmp_path):
    cfg = cfg_(conditional=True, num_classes=N_CLS, aux_weight=1.0, max_steps=3)
    out = train_gan(TinyG(N_CLS), TinyD("acgan"), make_data("label"), cfg, tmp_path / "ac", progress=False)
    rec = read_jsonl(tmp_path / "ac" / "metrics.jsonl")[-1]
    assert out["step"] == 3 and {"aux_D", "aux_G", "acc_real"} <= set(rec)

    # projection D with multi-hot float conditions; grid conditions given explicitly
    fixed = torch.eye(N_CLS).repeat(2, 1)
    cfg = cfg_(conditional=True, cond_in_d=True, loss="hinge", max_steps=2, r1_gamma=1.0, reg_every=2)
    train_gan(ProjG(), TinyD("proj"), make_data("multi"), cfg, tmp_path / "pr", fixed_cond=fixed, progress=False)
    recs = read_jsonl(tmp_path / "pr" / "metrics.jsonl")
    assert "r1" in recs[0] and "r1" not in recs[1]  # lazy R1: steps 0, 2, ... only
    with pytest.raises(UserError, match=r"returning \(adv_logits, class_logits\)"):  # ACGAN, plain D
        train_gan(TinyG(N_CLS), TinyD(), make_data("label"), cfg_(conditional=True, num_classes=N_CLS,
                                                                    aux_weight=1.0), tmp_path / "x", progress=False)


def test_acgan_aux_fake_weight_scales_d_class_loss_on_fakes():
    """aux_D = CE(real) + aux_fake_weight * CE(fake); 0 leaves D's classifier to real images only."""
    torch.manual_seed(0)
    G, D = TinyG(N_CLS), TinyD("acgan")
    real, y = torch.rand(16, 3, S, S) * 2 - 1, torch.arange(16) % N_CLS
    aux = {}
    for w in (0.0, 1.0, 3.0):
        torch.manual_seed(1)  # the same fakes each time
        L = GANLoss(G, D, cfg_(conditional=True, num_classes=N_CLS, aux_weight=1.0, aux_fake_weight=w))
        aux[w] = L.accumulate_gradients("D", real, y, backward=lambda loss: None)["aux_D"].item()
    ce_real = GANLoss.aux_loss(D(real)[1], y).item()
    assert aux[0.0] == pytest.approx(ce_real, rel=1e-5)
    ce_fake = aux[1.0] - ce_real
    assert ce_fake > 0.5 and aux[3.0] == pytest.approx(ce_real + 3 * ce_fake, rel=1e-5)
    with pytest.raises(UserError, match="aux_fake_weight"):
        validate_config(cfg_(conditional=True, num_classes=N_CLS, aux_weight=1.0, aux_fake_weight=-1))


def test_wgan_gp_and_export(tmp_path):
    cfg = cfg_(loss="wgan", gp_weight=10.0, phases="D,D,G", max_steps=2, beta1=0.0, beta2=0.9)
    G = TinyG()
    train_gan(G, TinyD(), make_data(), cfg, tmp_path / "run", progress=False)
    assert "gp" in read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    export_generator(tmp_path / "run" / "last.pt", tmp_path / "g.pt")
    ck = load_checkpoint(tmp_path / "g.pt")
    assert ck["config"]["loss"] == "wgan" and ck["step"] == 2
    assert all(v.dtype == torch.float16 for v in ck["model"].values())
    assert json.loads((tmp_path / "g.json").read_text())["ema"] is True
    G2 = TinyG()
    G2.load_state_dict(generator_state_dict(ck))
    a = generate(G2.eval(), 10, Z, seed=3, batch_size=3)
    b = generate(G2, 10, Z, seed=3, batch_size=10)
    assert a.shape == (10, 3, S, S) and torch.allclose(a, b, atol=1e-6)  # same z whatever the batch size


def test_recompute_bn_stats_matches_own_outputs():
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(Z, 6), nn.BatchNorm1d(6))
    G[1].running_mean.fill_(5.0)  # stale stats (as copied from another model)
    rng_before = torch.get_rng_state()
    recompute_bn_stats(G, Z, n=40, batch_size=16, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched
    z = torch.randn(40, Z, generator=torch.Generator().manual_seed(3))
    h = G[0](z)
    # cumulative average of the 3 batch means (16, 16, 8) and unbiased batch variances
    chunks = h.detach().split(16)
    assert torch.allclose(G[1].running_mean, torch.stack([c.mean(0) for c in chunks]).mean(0), atol=1e-6)
    assert torch.allclose(G[1].running_var, torch.stack([c.var(0) for c in chunks]).mean(0), atol=1e-6)
    assert not G.training and G[1].momentum == 0.1


def test_init_from_final_snapshot_and_d_warmup(tmp_path):
    """A run's final snapshot keeps D; a new run initialised from it starts with those weights, trains
    D alone for d_warmup steps (G untouched), and a bad file is a one-line error naming it."""
    cfg = cfg_(max_steps=3, snapshot_every=100)  # no periodic snapshot: only the final one
    G1, D1 = TinyG(), TinyD()
    train_gan(G1, D1, make_data(), cfg, tmp_path / "a", progress=False)
    snap = tmp_path / "a" / "snapshots" / "step_0000003.pt"
    ck = load_checkpoint(snap)
    assert ck["step"] == 3 and set(ck["D"]) == set(D1.state_dict())
    assert all(v.dtype == torch.float16 for v in ck["D"].values())
    assert json.loads(snap.with_suffix(".json").read_text())["has_D"] is True

    G2, D2 = TinyG(), TinyD()
    seen = {}

    def eval_fn(G_eval, step):  # EMA starts as the initialised G
        seen[step] = {k: v.clone() for k, v in G_eval.state_dict().items()}
        return {}

    out = train_gan(G2, D2, make_data(), cfg_(max_steps=2, d_warmup=2, init_from=str(snap), eval_every=1),
                    tmp_path / "b", eval_fn=eval_fn, progress=False)
    assert out["step"] == 2
    for k, v in ck["model"].items():  # D-only steps: G (and its EMA) still the snapshot's
        assert torch.equal(G2.state_dict()[k], v.float()) and torch.equal(seen[2][k], v.float())
    assert any(not torch.equal(D2.state_dict()[k], v.float()) for k, v in ck["D"].items())  # D trained
    recs = [r for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "train"]
    assert all("loss_G" not in r and "loss_D" in r for r in recs)
    # after the warm-up both train
    G3 = TinyG()
    train_gan(G3, TinyD(), make_data(), cfg_(max_steps=3, d_warmup=1, init_from=str(snap)), tmp_path / "c",
              progress=False)
    assert not torch.equal(G3.state_dict()["net.0.weight"], ck["model"]["net.0.weight"].float())

    with pytest.raises(UserError, match="checkpoint not found: .*nope.pt"):
        train_gan(TinyG(), TinyD(), make_data(), cfg_(init_from=str(tmp_path / "nope.pt")), tmp_path / "d",
                  progress=False)
    with pytest.raises(UserError, match=r"step_0000003.pt does not match .*same architecture"):
        train_gan(TinyG(N_CLS), TinyD(), make_data("label"), cfg_(conditional=True, num_classes=N_CLS,
                  init_from=str(snap)), tmp_path / "e", progress=False)
    with pytest.raises(UserError, match="d_warmup must be >= 0"):
        validate_config(cfg_(d_warmup=-1))


def test_init_from_adds_fresh_head_to_trained_d(tmp_path, capsys):
    """A D that gained a head since the file was saved (a class head for aux_weight): the trained parts
    load, the head starts fresh and is named; a D whose shared parts differ is still an error."""
    train_gan(TinyG(N_CLS), TinyD(), make_data("label"),
              cfg_(conditional=True, num_classes=N_CLS, max_steps=2, snapshot_every=100), tmp_path / "a", progress=False)
    snap = tmp_path / "a" / "snapshots" / "step_0000002.pt"
    ck = load_checkpoint(snap)
    ck["D"] = {k: v for k, v in ck["D"].items() if not k.startswith("cls.")}  # saved before the head existed
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    D = TinyD("acgan")
    cls_before = D.cls.weight.detach().clone()
    init_weights(TinyG(N_CLS), D, old)
    assert "D (new, fresh: cls)" in capsys.readouterr().out
    assert torch.equal(D.body[1].weight, ck["D"]["body.1.weight"].float()) and torch.equal(D.cls.weight, cls_before)
    ck["D"]["body.1.weight"] = ck["D"]["body.1.weight"][:, :5]
    torch.save(ck, old)
    with pytest.raises(UserError, match="old.pt does not match"):
        init_weights(TinyG(N_CLS), TinyD("acgan"), old)
    del ck["D"]["body.1.weight"]  # a key missing from a module the file does have: not a new head
    torch.save(ck, old)
    with pytest.raises(UserError, match="old.pt does not match"):
        init_weights(TinyG(N_CLS), TinyD("acgan"), old)
