"""One training loop for every adaptation mode on the digit domains.

    python -m p3_dann.train --source mnistm --target usps --mode source|dann|target|improved

Modes (target labels are used only by ``target`` and for evaluation):
- ``source``   lower bound: cross entropy on labelled source images only.
- ``target``   upper bound: cross entropy on labelled target images only.
- ``dann``     source cross entropy + domain-adversarial loss through gradient reversal (Ganin 2016).
- ``improved`` DANN + mean-teacher pseudo-labels: an EMA teacher labels weakly augmented target
               images, the student learns those labels (where the teacher is confident) on strongly
               augmented views (self-ensembling, French et al. 2018 / FixMatch-style); evaluated with
               the teacher.

The shipped ``improved`` model is two runs: the defaults above, then a self-training stage from its
weights without the adversarial loss, a slower teacher and a stricter threshold:
    python -m p3_dann.train --mode improved --init runs/p3_mnistm_usps_improved/final.pt \
        --run-dir runs/p3_mnistm_usps_improved_stage2 --steps 2000 --lr 3e-4 --domain-weight 0 \
        --ema-decay 0.998 --threshold 0.95

The run folder (``runs/p3_<source>_<target>_<mode>`` by default) holds config.json, metrics.jsonl,
last.pt (resume state, atomic; rerun the same command to resume) and final.pt / final.json.
``--export PATH`` also writes an fp16 copy of the final model plus ``PATH.json`` (for checkpoints/).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.data import TensorBatches, digit_dataset, digit_split, to_float
from common.errors import UserError, cli_main
from common.training import (EMA, CHECKPOINT_VERSION, GracefulStop, MetricsLog, add_config_args,
                             atomic_torch_save, atomic_write_json, check_finite, config_from_args,
                             config_from_dict, count_params, half_state_dict, load_checkpoint,
                             pick_device, rng_state, seed_everything, set_rng_state)

from p3_dann.adapt import Augment, DomainAdversarialLoss, dann_lambda, dann_lr, pseudo_label_loss
from p3_dann.model import DANN

DOMAINS = ("mnistm", "svhn", "usps")
MODES = ("source", "dann", "target", "improved")


@dataclass
class Config:
    source: str = "mnistm"
    target: str = "usps"
    mode: str = "dann"
    data_root: str = "hw2_data"
    cache_dir: str = "runs/p3_cache"   # decoded uint8 tensors, '' = no cache
    # model
    width: int = 32
    input_norm: str = "instance"
    # optimisation
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment_source: str = "weak"
    augment_target: str = "weak"       # the target view the loss (dann) / teacher (improved) sees
    # dann / improved
    domain_weight: float = 1.0         # 0 turns the adversarial loss off
    gamma: float = 10.0                # lambda warm-start 2/(1+exp(-gamma p))-1
    # improved (mean teacher + pseudo-labels)
    augment_student: str = "strong"
    ema_decay: float = 0.99
    threshold: float = 0.9
    pseudo_weight: float = 1.0
    init: str = ""                     # start from this checkpoint's weights (final.pt / exported), e.g.
                                       # a second self-training stage on top of a first improved run
    # bookkeeping
    log_every: int = 50                # training losses -> metrics.jsonl
    eval_every: int = 500              # + validation accuracies
    eval_source_max: int = 2000
    save_every_s: float = 120.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0                   # torch CPU threads, 0 = torch default


# Per-mode defaults (the command line overrides them).
MODE_DEFAULTS: dict[str, dict] = {
    "source": dict(steps=4000),
    "target": dict(steps=4000),
    "dann": dict(steps=4000, domain_weight=0.3),  # 1.0 oscillated (92.1 % vs 97.7 % on usps val)
    "improved": dict(steps=4000, augment_source="strong"),
}


def check_config(cfg: Config) -> None:
    for name in ("source", "target"):
        if getattr(cfg, name) not in DOMAINS:
            raise UserError(f"unknown {name} domain {getattr(cfg, name)!r}; choose from {', '.join(DOMAINS)}")
    if cfg.mode not in MODES:
        raise UserError(f"unknown mode {cfg.mode!r}; choose from {', '.join(MODES)}")
    for name in ("augment_source", "augment_target", "augment_student"):
        if getattr(cfg, name) not in ("none", "weak", "strong"):
            raise UserError(f"--{name.replace('_', '-')} must be none, weak or strong")
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise UserError("--steps must be >= 1 and --batch-size >= 2")


def build_model(cfg: Config) -> DANN:
    return DANN(width=cfg.width, input_norm=cfg.input_norm)


# ----------------------------------------------------------------------------- data
def load_domain(cfg: Config, domain: str, split: str, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split as uint8 (N, 3, 28, 28) + labels (N,), cached in ``cfg.cache_dir``."""
    s = digit_split(cfg.data_root, domain, split)
    key = f"{s.csv.resolve()}:{s.csv.stat().st_size}:{s.csv.stat().st_mtime_ns}"
    cache = Path(cfg.cache_dir) / f"{domain}_{split}.pt" if cfg.cache_dir else None
    if cache is not None and cache.is_file():
        try:
            d = torch.load(cache, weights_only=True)
            if d["key"] == key:
                return d["x"], d["y"]
        except Exception:
            pass  # stale or broken cache: decode again
    ds = digit_dataset(cfg.data_root, domain, split, channels=3)
    ds.size = 28  # resize anything that is not 28x28 (e.g. an older USPS copy at 16x16)
    x, y = ds.load_all(progress=progress)
    if cache is not None:
        atomic_torch_save({"key": key, "x": x, "y": y}, cache)
    return x, y


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512,
            features: bool = False) -> torch.Tensor:
    """Logits (N, 10) -- or features (N, D) -- of uint8 (N, 3, H, W) images, in eval mode, on CPU."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i:i + batch_size].to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append((model.features(xb) if features else model(xb)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    return (predict(model, x, device).argmax(1) == y).float().mean().item()


# ----------------------------------------------------------------------------- training

class AdaptationStep:
    """One optimisation step of any mode: ``(x_l, y_l, x_u, p, step) -> record dict``.

    x_l uint8 (B, 3, 28, 28) labelled images (source, or target in ``target`` mode), y_l (B,);
    x_u uint8 (B, 3, 28, 28) unlabelled target images (dann/improved, else None); p in [0, 1].
    Updates ``model`` (and the EMA teacher in ``improved`` mode) in place.
    """

    def __init__(self, cfg: Config, model: DANN, opt: torch.optim.Optimizer, ema: EMA | None,
                 device: torch.device, generator: torch.Generator):
        self.cfg, self.model, self.opt, self.ema, self.device, self.g = cfg, model, opt, ema, device, generator
        self.aug_l, self.aug_t = Augment(cfg.augment_source), Augment(cfg.augment_target)
        self.aug_strong = Augment(cfg.augment_student)
        self.dom_loss = DomainAdversarialLoss()

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, xu: torch.Tensor | None, p: float, step: int) -> dict:
        cfg, model, dev, g = self.cfg, self.model, self.device, self.g
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * dann_lr(p)
        x_s, y_s = self.aug_l(to_float(xb.to(dev)), g), yb.to(dev)
        rec = {}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            if xu is None:
                loss = F.cross_entropy(model(x_s).float(), y_s)
                rec["cls"] = loss.item()
            else:
                x_u = to_float(xu.to(dev))
                x_t = (self.aug_strong if cfg.mode == "improved" else self.aug_t)(x_u, g)
                f = model.features(torch.cat([x_s, x_t]))  # one batch: BN sees both domains
                f_s, f_t = f[:len(x_s)], f[len(x_s):]
                loss = cls = F.cross_entropy(model.classifier(f_s).float(), y_s)
                lambd = dann_lambda(p, cfg.gamma)
                rec.update(cls=cls.item(), lambd=lambd)
                if cfg.domain_weight > 0:  # DANN eq. 9-10: min over F, C; max over D via reversal
                    d_loss, d_acc = self.dom_loss(model, f_s, f_t, lambd)
                    loss = loss + cfg.domain_weight * d_loss
                    rec.update(domain=d_loss.item(), domain_acc=d_acc.item())
                if cfg.mode == "improved":  # mean teacher labels a weak view, student learns a strong one
                    with torch.no_grad():
                        teacher_logits = self.ema.module(self.aug_t(x_u, g))
                    pl, frac = pseudo_label_loss(model.classifier(f_t), teacher_logits, cfg.threshold)
                    loss = loss + cfg.pseudo_weight * pl
                    rec.update(pseudo=pl.item(), confident=frac.item())
        check_finite(step, loss=loss.item())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema is not None:
            self.ema.update(model)
        return rec


def train(cfg: Config, run_dir: Path, max_steps: int = 0, export: str = "", command: str = "",
          progress: bool = True) -> dict:
    """Train (or resume) one run; returns the final summary dict (also written to final.json)."""
    check_config(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)

    saved_cfg = run_dir / "config.json"
    if (run_dir / "last.pt").is_file() and saved_cfg.is_file():
        old = json.loads(saved_cfg.read_text())
        if old != dataclasses.asdict(cfg):
            raise UserError(f"{run_dir} holds a run with a different config; pass another --run-dir or delete it")
    atomic_write_json(saved_cfg, dataclasses.asdict(cfg))

    # data: labelled = what the classifier loss sees; unlabelled target for dann/improved
    labelled_domain = cfg.target if cfg.mode == "target" else cfg.source
    x_l, y_l = load_domain(cfg, labelled_domain, "train", progress)
    adapt = cfg.mode in ("dann", "improved")
    x_u = load_domain(cfg, cfg.target, "train", progress)[0] if adapt else None
    x_tv, y_tv = load_domain(cfg, cfg.target, "val", progress)
    x_sv, y_sv = load_domain(cfg, cfg.source, "val", progress)
    x_sv, y_sv = x_sv[:cfg.eval_source_max], y_sv[:cfg.eval_source_max]

    model = build_model(cfg).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.init:
        init_model, init_cfg = load_model(cfg.init)
        if (init_cfg.width, init_cfg.input_norm) != (cfg.width, cfg.input_norm):
            raise UserError(f"--init {cfg.init}: its width/input_norm differ from this run's")
        model.load_state_dict(init_model.state_dict())
    ema = EMA(model, cfg.ema_decay, warmup=not cfg.init) if cfg.mode == "improved" else None
    step, elapsed = 0, 0.0
    if (run_dir / "last.pt").is_file():
        st = load_checkpoint(run_dir / "last.pt", "resume state")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        step, elapsed = int(st["step"]), float(st["elapsed"])
        set_rng_state(st["rng"])
        print(f"resumed {run_dir} at step {step}", file=sys.stderr)

    g = torch.Generator().manual_seed(cfg.seed * 1000 + step)  # batches + augmentations
    batches_l = iter(TensorBatches(x_l, y_l, batch_size=cfg.batch_size, generator=g))
    batches_u = iter(TensorBatches(x_u, batch_size=cfg.batch_size, generator=g)) if adapt else None
    step_fn = AdaptationStep(cfg, model, opt, ema, device, g)
    log = MetricsLog(run_dir / "metrics.jsonl")
    eval_model = lambda: ema.module if ema is not None else model  # noqa: E731

    def save_state():
        atomic_torch_save({"version": CHECKPOINT_VERSION, "config": dataclasses.asdict(cfg),
                           "model": model.state_dict(), "opt": opt.state_dict(),
                           "ema": ema.state_dict() if ema is not None else None,
                           "step": step, "elapsed": elapsed, "rng": rng_state()}, run_dir / "last.pt")

    def evaluate() -> dict:
        m = eval_model()
        return {"target_val_acc": accuracy(m, x_tv, y_tv, device), "source_val_acc": accuracy(m, x_sv, y_sv, device)}

    stop_at = cfg.steps if max_steps <= 0 else min(cfg.steps, step + max_steps)
    model.train()
    t0, last_save = time.time(), time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.source}->{cfg.target} {cfg.mode}", disable=not progress,
               mininterval=2.0)
    with GracefulStop() as stopper:
        while step < stop_at and not stopper.requested:
            p = step / cfg.steps
            xb, yb = next(batches_l)
            rec = step_fn(xb, yb, next(batches_u)[0] if adapt else None, p, step)
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items()})
            do_eval = step % cfg.eval_every == 0 or step == cfg.steps
            if do_eval or step % cfg.log_every == 0:
                ev = {}
                if do_eval:
                    now = time.time()
                    ev = evaluate()
                    elapsed += now - t0  # evaluation time is not training time
                    t0 = time.time()
                    if progress:
                        bar.write(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in ev.items()))
                log.write(step=step, lr=cfg.lr * dann_lr(p), elapsed=round(elapsed + time.time() - t0, 1), **rec, **ev)
            if time.time() - last_save > cfg.save_every_s:
                elapsed += time.time() - t0
                t0 = time.time()
                save_state()
                last_save = time.time()
        elapsed += time.time() - t0
        save_state()
    bar.close()
    if step < cfg.steps:
        print(f"stopped at step {step}/{cfg.steps}; rerun the same command to resume", file=sys.stderr)
        return {"step": step, "finished": False}
    ev = evaluate()
    total = elapsed
    if cfg.init and Path(cfg.init).with_suffix(".json").is_file():  # count the first stage's time too
        first = json.loads(Path(cfg.init).with_suffix(".json").read_text())
        total += float(first.get("train_time_total_s", first.get("train_time_s", 0)))
    summary = {"scenario": f"{cfg.source}->{cfg.target}", "mode": cfg.mode, "step": step,
               "train_time_s": round(elapsed, 1), "train_time_total_s": round(total, 1), "device": str(device), "params": count_params(model),
               **{k: round(v, 5) for k, v in ev.items()}, "command": command, "config": dataclasses.asdict(cfg)}
    final = {"version": CHECKPOINT_VERSION, "config": dataclasses.asdict(cfg),
             "model": eval_model().state_dict(), "step": step, "metrics": ev}
    atomic_torch_save(final, run_dir / "final.pt")
    atomic_write_json(run_dir / "final.json", summary)
    if export:
        export_checkpoint(final, summary, Path(export))
    return summary


def export_checkpoint(final: dict, summary: dict, path: Path) -> None:
    """fp16 weights + ``<path>.json`` describing how they were trained and what they reach."""
    atomic_torch_save({**final, "model": half_state_dict(final["model"])}, path)
    atomic_write_json(path.with_suffix(".json"), {**summary, "checkpoint": path.name})
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


def load_model(path: str | Path, device: torch.device | None = None) -> tuple[DANN, Config]:
    """Rebuild a model from a final/exported checkpoint's config alone (fp16 weights become fp32)."""
    ck = load_checkpoint(path, "train one with python -m p3_dann.train")
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise UserError(f"{path} is not a p3_dann checkpoint (needs 'config' and 'model')")
    cfg = config_from_dict(Config, ck["config"])
    model = build_model(cfg)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    return model.to(device or torch.device("cpu")).eval(), cfg


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, Config)
    parser.add_argument("--run-dir", default="", help="default runs/p3_<source>_<target>_<mode>")
    parser.add_argument("--max-steps", type=int, default=0, help="stop (resumably) after this many steps")
    parser.add_argument("--dry-run", action="store_true", help="3 steps with batch 8, no cache: a smoke test")
    parser.add_argument("--export", default="", help="also write fp16 weights + JSON here (checkpoints/...)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    mode = args.mode or Config.mode
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    cfg = config_from_args(Config, args, base=Config(**MODE_DEFAULTS[mode]))
    if args.dry_run:
        cfg = dataclasses.replace(cfg, steps=3, batch_size=8, eval_every=3, cache_dir="")
    run_dir = Path(args.run_dir or f"runs/p3_{cfg.source}_{cfg.target}_{cfg.mode}")
    command = "python -m p3_dann.train " + shlex.join(argv)
    summary = train(cfg, run_dir, args.max_steps, args.export, command, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


def run() -> None:
    """Console entry point: ``main`` with one-line errors."""
    cli_main(main)


if __name__ == "__main__":
    run()
