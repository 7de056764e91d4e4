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
    python -m p3_dann.train --mode improved --init-from runs/p3_mnistm_usps_improved/final.pt \
        --run-dir runs/p3_mnistm_usps_improved_stage2 --max-steps 2000 --lr 3e-4 --domain-weight 0 \
        --ema-decay 0.998 --threshold 0.95

The run folder (``runs/p3_<source>_<target>_<mode>`` by default) holds config.json, metrics.jsonl,
last.pt (resume state, atomic; rerun the same command to resume) and final.pt / final.json.
``--export PATH`` also writes an fp16 copy of the final model plus ``PATH.json`` (for checkpoints/).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.checkpoint import save_shipped, shipped_form
from common.cli import add_config_args, add_run_args, command_parser, config_from_args, config_from_dict, dry_run_dir
from common.data import TensorBatches, to_float
from common.errors import UserError, cli_main
from common.training import (CHECKPOINT_VERSION, EMA, GracefulStop, MetricsLog, TrainPrecision, atomic_torch_save,
                             atomic_write_json, check_finite, count_params, load_checkpoint, pick_device, rng_state,
                             seed_everything, set_rng_state)
from p3_dann.adapt import Augment, DomainAdversarialLoss, dann_lambda, dann_lr, pseudo_label_loss
from p3_dann.config import MODE_DEFAULTS, MODES, Config, build_model, check_config
from p3_dann.data import load_domain
from p3_dann.evaluate import accuracy, load_model
from p3_dann.model import DANN


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
        self.prec = TrainPrecision(cfg.precision, device)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, xu: torch.Tensor | None, p: float, step: int) -> dict:
        cfg, model, dev, g = self.cfg, self.model, self.device, self.g
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * dann_lr(p)
        x_s, y_s = self.aug_l(to_float(xb.to(dev)), g), yb.to(dev)
        rec = {}
        with self.prec.autocast():
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
        self.prec.backward(loss)
        self.prec.step(self.opt)
        self.prec.update()
        if self.ema is not None:
            self.ema.update(model)
        return rec


def train(cfg: Config, run_dir: Path, stop_after: int = 0, export: str = "", command: str = "",
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
        old = config_from_dict(Config, json.loads(saved_cfg.read_text()))
        if old != cfg:
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
    if cfg.init_from:
        init_model, init_cfg = load_model(cfg.init_from)
        if (init_cfg.width, init_cfg.input_norm) != (cfg.width, cfg.input_norm):
            raise UserError(f"--init-from {cfg.init_from}: its width/input_norm differ from this run's")
        model.load_state_dict(init_model.state_dict())
    ema = EMA(model, cfg.ema_decay, warmup=not cfg.init_from) if cfg.mode == "improved" else None
    step, elapsed, resumed = 0, 0.0, None
    if (run_dir / "last.pt").is_file():
        st = resumed = load_checkpoint(run_dir / "last.pt", "resume state")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        step, elapsed = int(st["step"]), float(st["elapsed"])
        set_rng_state(st["rng"])
        print(f"resumed {run_dir} at step {step}", file=sys.stderr)

    g = torch.Generator().manual_seed(cfg.seed * 1000 + step)  # batches + augmentations
    source_l = TensorBatches(x_l, y_l, batch_size=cfg.batch_size, generator=g)
    source_u = TensorBatches(x_u, batch_size=cfg.batch_size, generator=g) if adapt else None
    if resumed and resumed.get("batches_l") is not None:  # both streams where they were, g too
        source_l.load_state_dict(resumed["batches_l"])
        if source_u is not None and resumed.get("batches_u") is not None:
            source_u.load_state_dict(resumed["batches_u"])
    batches_l = iter(source_l)
    batches_u = iter(source_u) if adapt else None
    step_fn = AdaptationStep(cfg, model, opt, ema, device, g)
    log = MetricsLog(run_dir / "metrics.jsonl", resume_from=step)
    eval_model = lambda: ema.module if ema is not None else model  # noqa: E731

    def save_state():
        atomic_torch_save({"version": CHECKPOINT_VERSION, "config": dataclasses.asdict(cfg),
                           "model": model.state_dict(), "opt": opt.state_dict(),
                           "ema": ema.state_dict() if ema is not None else None,
                           "step": step, "elapsed": elapsed, "rng": rng_state(), "batches_l": source_l.state_dict(),
                           "batches_u": source_u.state_dict() if source_u is not None else None}, run_dir / "last.pt")

    def evaluate() -> dict:
        m = eval_model()
        return {"target_val_acc": accuracy(m, x_tv, y_tv, device), "source_val_acc": accuracy(m, x_sv, y_sv, device)}

    stop_at = cfg.max_steps if stop_after <= 0 else min(cfg.max_steps, step + stop_after)
    model.train()
    t0, last_save = time.time(), time.time()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"{cfg.source}->{cfg.target} {cfg.mode}", disable=not progress,
               mininterval=2.0)
    with GracefulStop() as stopper:
        while step < stop_at and not stopper.requested:
            p = step / cfg.max_steps
            xb, yb = next(batches_l)
            rec = step_fn(xb, yb, next(batches_u)[0] if adapt else None, p, step)
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items()})
            do_eval = step % cfg.eval_every == 0 or step == cfg.max_steps
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
            if time.time() - last_save > cfg.save_every_min * 60:
                elapsed += time.time() - t0
                t0 = time.time()
                save_state()
                last_save = time.time()
        elapsed += time.time() - t0
        save_state()
    bar.close()
    if step < cfg.max_steps:
        print(f"stopped at step {step}/{cfg.max_steps}; rerun the same command to resume", file=sys.stderr)
        return {"step": step, "finished": False}
    ev = evaluate()
    total = elapsed
    if cfg.init_from and Path(cfg.init_from).with_suffix(".json").is_file():  # count the first stage's time too
        first = json.loads(Path(cfg.init_from).with_suffix(".json").read_text())
        total += float(first.get("train_time_total_s", first.get("train_time_s", 0)))
    summary = {"scenario": f"{cfg.source}->{cfg.target}", "mode": cfg.mode, "step": step,
               "train_time_s": round(elapsed, 1), "train_time_total_s": round(total, 1), "device": str(device), "params": count_params(model),
               **{k: round(v, 5) for k, v in ev.items()}, "command": command, "config": dataclasses.asdict(cfg)}
    weights = eval_model().state_dict()
    save_shipped(shipped_form(dataclasses.asdict(cfg), weights, step, fp16=False, metrics=ev),
                 run_dir / "final.pt", summary)
    if export:
        export_model(dataclasses.asdict(cfg), weights, step, ev, summary, Path(export))
    return summary


def export_model(config: dict, weights: dict, step: int, metrics: dict, summary: dict, path: Path) -> None:
    """fp16 weights + ``<path>.json`` describing how they were trained and what they reach."""
    save_shipped(shipped_form(config, weights, step, metrics=metrics), path, {**summary, "checkpoint": path.name})
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m p3_dann.train", __doc__,
                       "python -m p3_dann.train --mode dann                  # mnistm -> usps, runs/p3_mnistm_usps_dann/",
                       "python -m p3_dann.train --mode improved --export checkpoints/p3_mnistm_usps_improved.pt",
                       "python -m p3_dann.train --mode source --device cuda --max-steps 8000")
    add_run_args(p, data_default=None, data_help="", run_default="runs/p3_<source>_<target>_<mode>")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop (resumably) after this many steps of this invocation; 0 runs to --max-steps (default: 0)")
    p.add_argument("--export", default="", help="also write the final model as fp16 weights plus PATH.json (for checkpoints/)")
    add_config_args(p, Config, flags={"data_root": "--data"}, deprecated={"--steps": "max_steps", "--init": "init_from"})
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    mode = args.mode or Config.mode
    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    cfg = config_from_args(Config, args, base=Config(**MODE_DEFAULTS[mode]))
    if args.dry_run:
        cfg = dataclasses.replace(cfg, max_steps=3, batch_size=8, eval_every=3, cache_dir="")
        run_dir = dry_run_dir(args.run_dir, "p3")
    else:
        run_dir = Path(args.run_dir or f"runs/p3_{cfg.source}_{cfg.target}_{cfg.mode}")
    command = "python -m p3_dann.train " + shlex.join(argv)
    summary = train(cfg, run_dir, args.stop_after, args.export, command, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
