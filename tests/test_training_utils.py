import argparse
import dataclasses
import math
import os
import signal

import pytest
import torch
from torch import nn

from common.cli import add_config_args, config_from_args, config_from_dict
from common.errors import UserError
from common.training import (EMA, GracefulStop, MetricsLog, NonFiniteLoss, atomic_torch_save, check_finite,
                             load_checkpoint, read_jsonl)


@dataclasses.dataclass
class Cfg:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    amp: bool = True
    widths: tuple = (32, 64)


def test_config_cli_roundtrip():
    p = argparse.ArgumentParser()
    add_config_args(p, Cfg)
    cfg = config_from_args(Cfg, p.parse_args(["--lr", "0.5", "--amp", "false", "--widths", "8", "16", "32"]))
    assert cfg == Cfg(lr=0.5, amp=False, widths=(8, 16, 32))
    assert config_from_dict(Cfg, {**dataclasses.asdict(cfg), "widths": [8, 16, 32], "old_key": 1}) == cfg
    with pytest.raises(SystemExit):
        p.parse_args(["--amp", "maybe"])


def test_atomic_save_and_load(tmp_path):
    path = tmp_path / "a" / "ck.pt"
    atomic_torch_save({"w": torch.arange(3)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))
    assert os.listdir(path.parent) == ["ck.pt"]  # no temp files left
    with pytest.raises(UserError, match=r"checkpoint not found: .*nope\.pt \(train it first\)"):
        load_checkpoint(tmp_path / "nope.pt", hint="train it first")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_ema_tracks_average():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.5)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.75)
    assert not ema.module.weight.requires_grad


def test_check_finite_and_metrics(tmp_path):
    check_finite(3, d=1.0, g=-2.0)
    with pytest.raises(NonFiniteLoss, match="loss g is nan at step 7"):
        check_finite(7, d=1.0, g=math.nan)
    log = MetricsLog(tmp_path / "m.jsonl")
    log.write(step=1, loss=0.5)
    with open(tmp_path / "m.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # a line cut by a kill
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1]


def test_graceful_stop_sets_flag():
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested


def test_half_state_dict_is_fp16_on_cpu_and_keeps_integers():
    from common.training import half_state_dict
    sd = {"w": torch.randn(3, requires_grad=True), "n": torch.tensor(7)}
    if torch.cuda.is_available():
        sd["g"] = torch.randn(2, device="cuda")
    out = half_state_dict(sd)
    assert out["w"].dtype == torch.float16 and out["n"].dtype == torch.int64 and out["n"].item() == 7
    assert all(v.device.type == "cpu" and not v.requires_grad for v in out.values())


def test_train_precision_resolves_per_device_and_trains_in_bf16(monkeypatch):
    from common import training
    from common.training import TrainPrecision
    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "cpu_bf16_is_faster", lambda: True)
    assert TrainPrecision("auto", cpu).name == "bf16"
    monkeypatch.setattr(training, "cpu_bf16_is_faster", lambda: False)
    assert TrainPrecision("auto", cpu).name == "fp32" and TrainPrecision("auto", cpu).scaler is None
    with pytest.raises(UserError, match="fp16 training needs a CUDA GPU"):
        TrainPrecision("fp16", cpu)
    with pytest.raises(UserError, match="'half'"):
        TrainPrecision("half", cpu)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prec = TrainPrecision("bf16", cpu)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    losses = []
    for _ in range(20):
        with prec.autocast():
            loss = nn.functional.mse_loss(net(x).float(), y)
        opt.zero_grad()
        prec.backward(loss)
        prec.step(opt)
        prec.update()
        losses.append(loss.item())
    assert set(seen) == {torch.bfloat16} and all(p.dtype == torch.float32 for p in net.parameters())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_bench_train_quick_table(capsys):
    import re

    import bench_train
    assert bench_train.main(["--quick", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line for line in lines if line.startswith("| P")]
    assert len(rows) == 6 and all(float(r.split("|")[4]) > 0 for r in rows)
    assert re.fullmatch(r"bf16 speedup: p1 \d+\.\d\dx, p2 \d+\.\d\dx, p3 \d+\.\d\dx", lines[-1])
    assert lines[-2].startswith("CPU ") and ("bf16 native" in lines[-2] or "bf16 emulated" in lines[-2])


def test_rng_state_round_trips_every_generator(tmp_path):
    import random

    import numpy as np

    from common.training import rng_state, set_rng_state
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    atomic_torch_save({"rng": rng_state()}, tmp_path / "s.pt")
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "s.pt")["rng"])  # weights_only=True loads it
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and expected[3] == got[3]


def test_metrics_log_on_resume_drops_the_rows_a_killed_run_wrote_after_its_save(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (1, 2, 3, 4):
        log.write(kind="train", step=step)
    with open(path, "a") as f:
        f.write('{"kind": "train", "st')  # torn by SIGKILL
    log = MetricsLog(path, resume_from=2)  # the last save was at step 2
    log.write(kind="train", step=3)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


def test_cpu_bf16_is_used_only_where_measured_faster(tmp_path, monkeypatch):
    from common import training
    monkeypatch.setenv("HW2_CACHE", str(tmp_path))
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    for fp32_s, bf16_s, faster in ((1.0, 0.6, True), (1.0, 1.4, False)):
        (tmp_path / "cpu_bf16.json").unlink(missing_ok=True)
        training.cpu_bf16_is_faster.cache_clear()
        monkeypatch.setattr(training, "_time_conv", lambda bf16, backward, a=fp32_s, b=bf16_s: b if bf16 else a)
        assert training.cpu_bf16_is_faster() is faster
        assert training.resolve_precision("auto", torch.device("cpu")) == ("bf16" if faster else "fp32")
        training.cpu_bf16_is_faster.cache_clear()
        monkeypatch.setattr(training, "_time_conv", lambda *a: pytest.fail("measured again instead of the cache"))
        assert training.cpu_bf16_is_faster() is faster  # from cpu_bf16.json
    training.cpu_bf16_is_faster.cache_clear()
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    assert training.cpu_bf16_is_faster() is False  # emulated bf16 is never measured
    training.cpu_bf16_is_faster.cache_clear()


def test_the_bf16_probe_leaves_the_global_random_stream_alone(tmp_path, monkeypatch):
    from common import training
    monkeypatch.setenv("HW2_CACHE", str(tmp_path))  # no cached answer: the probe runs
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    training.cpu_bf16_is_faster.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    training.cpu_bf16_is_faster()
    assert torch.equal(torch.rand(3), expected)
    training.cpu_bf16_is_faster.cache_clear()
