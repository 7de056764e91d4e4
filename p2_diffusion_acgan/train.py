"""Train the problem-2 generators: ``--model diffusion`` (conditional DDPM with classifier-free
guidance), ``acgan`` or ``sagan`` (the two GANs go through the shared GAN loop, common/gan.py).

    python -m p2_diffusion_acgan.train --model diffusion [--run-dir runs/p2_diffusion] [--max-steps N] [--lr ...]
    python -m p2_diffusion_acgan.train --model diffusion --dry-run      # 2 steps on 256 images, throw-away folder

The run folder holds config.json, metrics.jsonl, last.pt (full resume state, atomic, every
``save_every_min`` minutes and on SIGTERM/Ctrl-C), samples/ grids, and model.pt: the slim,
inference-ready checkpoint (EMA weights, fp16) that is copied to checkpoints/p2_<model>.pt to ship.
Rerunning the same command resumes from last.pt (the saved config, CLI overrides on top).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm import tqdm

from common.checkpoint import shipped_form
from common.cli import add_config_args, add_run_args, command_parser, config_from_args, config_from_dict, dry_run_dir
from common.data import TensorBatches, save_grid, to_float
from common.errors import UserError, cli_main
from common.training import (CHECKPOINT_VERSION, EMA, GracefulStop, MetricsLog, TrainPrecision, atomic_torch_save,
                             atomic_write_json, check_finite, count_params, first_line, load_checkpoint, load_states,
                             pick_device, rng_state, seed_everything, set_rng_state)
from p2_diffusion_acgan.config import DiffusionConfig, build_unet, diffusion_config, gan_config_class
from p2_diffusion_acgan.data import grid_labels, load_train_data
from p2_diffusion_acgan.diffusion import diffusion_loss, sample
from p2_diffusion_acgan.schedulers import NoiseSchedule, make_sampler, per_image_generators

MODELS = ("diffusion", "acgan", "sagan")


# ----------------------------------------------------------------------------- diffusion
def sample_grid_diffusion(model, cfg: DiffusionConfig, path: Path, seed: int = 0) -> None:
    """10x10 grid (rows = digits) with the config's sampler/steps/guidance and fixed per-image noise."""
    y = grid_labels()
    sampler = make_sampler(cfg.sampler, NoiseSchedule(cfg.timesteps, cfg.schedule), cfg.spacing)
    x = sample(model, sampler, y, cfg.guidance, cfg.sample_steps, per_image_generators(seed, len(y)),
               guidance_interval=tuple(cfg.guidance_interval), precision=cfg.sample_precision)
    save_grid(x, path, nrow=10)


def train_diffusion(cfg: DiffusionConfig, run_dir: str | Path,
                    eval_fn: Callable[[torch.nn.Module, DiffusionConfig], dict] | None = None,
                    progress: bool = True) -> dict:
    """Train (or resume) a conditional DDPM; returns the last logged record."""
    cfg.validate()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    x_all, y_all = load_train_data(cfg.data_root, cfg.domain, cfg.max_images, progress)

    model = build_unet(cfg).to(device)
    if cfg.channels_last:  # 1.7x faster training of this U-Net on a CPU too
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    prec = TrainPrecision(cfg.precision, device)
    schedule = NoiseSchedule(cfg.timesteps, cfg.schedule)
    batches = TensorBatches(x_all, y_all, batch_size=min(cfg.batch_size, len(x_all)),
                            generator=torch.Generator().manual_seed(cfg.seed))
    # t, eps and condition dropout; drawn on the GPU there (a CPU generator made the loop CPU-bound)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    step = 0
    last = run / "last.pt"
    if last.is_file():
        st = load_checkpoint(last, "delete it to start over")
        if st.get("kind") != "p2_diffusion_train":
            raise UserError(f"{last} is not a diffusion training state (kind {st.get('kind')!r}); use another --run")
        load_states(last, st, [(model, "model"), (ema, "ema"), (opt, "opt")], "use another --run")
        prec.load_state_dict(st.get("scaler"))
        if "batches" in st:  # the place in the current epoch: the batches an uninterrupted run would see
            batches.load_state_dict(st["batches"])
        else:  # saved by an earlier release: a new permutation from the saved generator state
            batches.generator.set_state(st["batch_rng"])
        try:
            noise_gen.set_state(st["noise_rng"])
        except (RuntimeError, TypeError):  # saved on another device type: the noise stream restarts
            print(f"note: {last} has a noise generator state of another device; noise reseeded")
        set_rng_state(st["rng"])
        step = int(st["step"])
        print(f"resumed {last} at step {step}")
    elif cfg.init_from:
        init = load_checkpoint(cfg.init_from, "a p2_diffusion model.pt / shipped checkpoint")
        if init.get("kind") != "p2_diffusion" or "model" not in init:
            raise UserError(f"{cfg.init_from} is not a diffusion model checkpoint (kind {init.get('kind')!r})")
        sd = {k: v.float() for k, v in init["model"].items()}
        try:
            model.load_state_dict(sd)
            ema.module.load_state_dict(sd)
        except RuntimeError as e:
            raise UserError(f"{cfg.init_from} does not fit this U-Net config: {first_line(e)}") from None
        print(f"initialised from {cfg.init_from} (its step {init.get('step')}; this run counts from 0)")
    atomic_write_json(run / "config.json", dataclasses.asdict(cfg))

    def save() -> None:
        atomic_torch_save({"version": CHECKPOINT_VERSION, "kind": "p2_diffusion_train", "config": dataclasses.asdict(cfg),
                           "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                           "scaler": prec.state_dict(), "step": step, "batches": batches.state_dict(),
                           "noise_rng": noise_gen.get_state(), "rng": rng_state()}, last)
        atomic_torch_save(shipped_form(dataclasses.asdict(cfg), ema.module.state_dict(), step, kind="p2_diffusion"), run / "model.pt")
        atomic_write_json(run / "model.json", {"kind": "p2_diffusion", "step": step, "weights": "EMA, fp16",
                                               "config": dataclasses.asdict(cfg), "metrics": last_eval,
                                               **({"accuracy": last_eval["accuracy"]} if "accuracy" in last_eval else {})})

    log = MetricsLog(run / "metrics.jsonl", resume_from=step)
    print(f"diffusion U-Net: {count_params(model) / 1e6:.2f}M parameters, {len(x_all)} images, device {device}, "
          f"{prec.name} training")
    record: dict = {}
    last_eval: dict = {}
    loss_avg, t_save, t_log, n_log = None, time.time(), time.time(), 0
    loss_sum, n_sum = None, 0
    model.train()
    it = iter(batches)
    with GracefulStop() as stop, tqdm(total=cfg.max_steps, initial=step, desc="diffusion", dynamic_ncols=True,
                                  disable=not progress) as bar:
        while step < cfg.max_steps and not stop.requested:
            xb, yb = next(it)
            x0 = to_float(xb.to(device, non_blocking=True))
            if cfg.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            for g in opt.param_groups:
                g["lr"] = lr
            with prec.autocast():
                loss = diffusion_loss(model, schedule, x0, yb.to(device), cfg.p_uncond, noise_gen)
            opt.zero_grad(set_to_none=True)
            prec.backward(loss)
            prec.unscale(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            prec.step(opt)
            prec.update()
            ema.update(model)
            step += 1
            n_log += len(x0)
            loss_sum = loss.detach().float() + (loss_sum if n_sum else 0.0)  # no GPU sync per step
            n_sum += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                mean = loss_sum.item() / n_sum  # the one sync per log interval
                check_finite(step, loss=mean)
                loss_avg = mean if loss_avg is None else 0.5 * loss_avg + 0.5 * mean
                n_sum = 0
                bar.set_postfix(loss=f"{loss_avg:.4f}")
                now = time.time()
                record = {"kind": "train", "step": step, "loss": mean, "loss_avg": loss_avg, "lr": lr,
                          "grad_norm": float(gnorm), "img_per_s": n_log / max(now - t_log, 1e-9)}
                log.write(**record)
                t_log, n_log = now, 0
            if cfg.sample_every and step % cfg.sample_every == 0:
                sample_grid_diffusion(ema.module, cfg, run / "samples" / f"step_{step:07d}.png")
            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
                last_eval = {"step": step, **eval_fn(ema.module, cfg)}
                log.write(kind="eval", **last_eval)
            if time.time() - t_save > cfg.save_every_min * 60:
                if n_sum:
                    check_finite(step, loss=loss_sum.item() / n_sum)  # never save a diverged state
                save()
                t_save = time.time()
    save()
    if stop.requested:
        print(f"stopped at step {step}; state saved to {last} (rerun the same command to resume)")
    return record


# ----------------------------------------------------------------------------- CLI
def _config_class(model: str):
    return DiffusionConfig if model == "diffusion" else gan_config_class(model)


def build_parser(model: str) -> argparse.ArgumentParser:
    p = command_parser("python -m p2_diffusion_acgan.train", __doc__,
                       "python -m p2_diffusion_acgan.train                        # diffusion U-Net -> runs/p2_diffusion/",
                       "python -m p2_diffusion_acgan.train --model acgan --device cuda --max-steps 30000",
                       "python -m p2_diffusion_acgan.train --init-from checkpoints/p2_diffusion.pt --lr 5e-5 "
                       "--run-dir runs/p2_more")
    p.add_argument("--model", choices=MODELS, default="diffusion",
                   help="what to train: the diffusion U-Net, ACGAN or the SAGAN-style cGAN (default: diffusion); "
                        "--help lists the options of the chosen model")
    add_run_args(p, data_default=None, data_help="", run_default="runs/p2_<model>")
    add_config_args(p, _config_class(model), flags={"data_root": "--data"})
    return p


def main(argv: Sequence[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", choices=MODELS, default="diffusion")
    model = pre.parse_known_args(argv)[0].model
    Cfg = _config_class(model)
    args = build_parser(model).parse_args(argv)
    if args.dry_run:
        run = dry_run_dir(args.run_dir, f"p2_{model}")
    else:
        run = Path(args.run_dir or f"runs/p2_{model}")
    base = None
    if (run / "last.pt").is_file() and (run / "config.json").is_file():
        saved = json.loads((run / "config.json").read_text())
        base = diffusion_config(saved) if model == "diffusion" else config_from_dict(Cfg, saved)
    cfg = config_from_args(Cfg, args, base)
    if args.dry_run:
        cfg = dataclasses.replace(cfg, max_steps=min(cfg.max_steps, 2), max_images=cfg.max_images or 256,
                                  batch_size=min(cfg.batch_size, 32), sample_every=0, eval_every=0)
    if cfg.eval_every:  # the evaluation needs the course classifier: say so now, not at the first evaluation
        from common.digit_classifier import load_classifier
        load_classifier()
    if model == "diffusion":
        eval_fn = None
        if cfg.eval_every:
            from p2_diffusion_acgan.evaluate import diffusion_eval_fn
            eval_fn = diffusion_eval_fn
        rec = train_diffusion(cfg, run, eval_fn=eval_fn, progress=not args.no_progress)
    else:
        from p2_diffusion_acgan.gans import train_gan
        rec = train_gan(model, cfg, run, progress=not args.no_progress)
    print(f"done: {run} {json.dumps(rec)}")
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
