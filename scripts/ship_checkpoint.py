"""Ship a trained generator: its weights -> checkpoints/NAME.pt (fp16, with D where SRC keeps one), NAME.json updated.

    python scripts/ship_checkpoint.py runs/p2_diffusion/model.pt p2_diffusion \
        --config sample_steps=8 --config guidance=4.0 \
        --set accuracy=0.998 --set fid_vs_mnistm_val=70.1 --set training.minutes=8.9 \
        --source "runs/p2_diffusion/model.pt (H200, 2026-11-26)"

The file must be a shipped form (a ``model`` key: a run's model.pt, export or snapshot). The old
JSON's headline fields (step, metrics, accuracy, FID, source) move under ``previous``; the rest is
kept unless ``--set`` replaces it. ``--set KEY=VALUE`` takes a dotted key and a JSON value (a bare
word stays a string); ``--config KEY=VALUE`` changes the saved config (e.g. the default sampler; the
GAN sampling options ``truncation``, ``candidates``, ``accept_prob`` may be added). ``--discriminator
RUN/last.pt`` keeps that run's D (fp16) instead of SRC's own, which problem-2 GANs use to rank
``candidates``. SRC's own D (a run's final snapshot keeps one) ships by default, so that training can go on from
the shipped file on a new machine (``--init-from checkpoints/NAME.pt``; a trained G with a fresh D
does not learn); ``--no-discriminator`` drops it.
Where the model has a training history (``checkpoints/logs/NAME/history.jsonl``, common/history.py),
SRC must be in it (evaluated), and it is marked there as the shipped snapshot.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from common.errors import UserError, cli_main
from common.history import mark_shipped, read_history
from common.training import atomic_torch_save, atomic_write_json, half_state_dict, load_checkpoint

SAMPLING_KEYS = ("truncation", "candidates", "accept_prob")  # GAN inference options a config may gain
HEADLINE = ("step", "metrics", "accuracy", "accuracy_1000", "fid_vs_mnistm_val", "metrics_command", "source",
            "discriminator_source")


def parse_pair(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def set_dotted(d: dict, key: str, value: object) -> None:
    *parents, last = key.split(".")
    for p in parents:
        if not isinstance(d.setdefault(p, {}), dict):
            raise UserError(f"--set {key}: {p!r} is not a JSON object in the old file")
        d = d[p]
    d[last] = value


def ship(src: Path, name: str, ckpt_dir: Path, sets: list[str], configs: list[str], source: str,
         discriminator: Path | None = None, keep_d: bool = True) -> dict:
    ck = load_checkpoint(src, "a run's model.pt, an export or a snapshot")
    history = ckpt_dir / "logs" / name / "history.jsonl"
    if history.is_file() and str(src) not in {r["checkpoint"] for r in read_history(history)}:
        raise UserError(f"{src} is not in {name}'s training history {history}: evaluate it first with "
                        f"scripts/p1_eval_snapshots.py / p2_eval_snapshots.py --history {history}")
    if not isinstance(ck.get("model"), dict) or not isinstance(ck.get("config"), dict):
        raise UserError(f"{src} is not a shipped form (no 'model' weights and 'config'); "
                        f"export it first (common.gan.export_generator)")
    out = {k: v for k, v in ck.items() if k != "D"}
    out["model"] = half_state_dict(ck["model"])
    out["config"] = dict(ck["config"])
    for text in configs:
        k, v = parse_pair(text)
        if k not in out["config"] and k not in SAMPLING_KEYS:
            raise UserError(f"--config {k}: no such field in {src}'s config")
        out["config"][k] = v
    if discriminator is not None:
        dk = load_checkpoint(discriminator, "a run's last.pt (or a snapshot that keeps D)")
        if not isinstance(dk.get("D"), dict):
            raise UserError(f"{discriminator} holds no discriminator weights ('D')")
        arch = (dk.get("config") or {}).get("arch")
        if arch != out["config"].get("arch"):
            raise UserError(f"{discriminator} is a {arch!r} run, {src} a {out['config'].get('arch')!r} model")
        out["D"] = half_state_dict(dk["D"])
    elif keep_d and isinstance(ck.get("D"), dict):
        out["D"] = half_state_dict(ck["D"])
    meta_path = ckpt_dir / f"{name}.json"
    old = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta = {k: v for k, v in old.items() if k not in HEADLINE and k != "previous"}
    if old:
        meta["previous"] = {k: old[k] for k in HEADLINE if k in old}
    meta.update(step=int(ck.get("step", 0)), config=out["config"], source=source or str(src), has_D="D" in out)
    if discriminator is not None:
        meta["discriminator_source"] = f"{discriminator} (step {int(dk.get('step', 0))})"
    elif "D" in out:
        meta["discriminator_source"] = f"{src} (its own D, step {int(ck.get('step', 0))})"
    for text in sets:
        set_dotted(meta, *parse_pair(text))
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out, ckpt_dir / f"{name}.pt")
    atomic_write_json(meta_path, meta)
    if history.is_file():
        mark_shipped(history, src)
    size = (ckpt_dir / f"{name}.pt").stat().st_size / 2**20
    print(f"shipped {src} -> {ckpt_dir / name}.pt ({size:.1f} MiB) and {meta_path}")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/ship_checkpoint.py", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="the shipped form to copy (model.pt, export, snapshot)")
    p.add_argument("name", help="checkpoint name, e.g. p1_methodA or p2_diffusion")
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="JSON field (dotted key)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="saved config field")
    p.add_argument("--source", default="", help="where the weights came from (default: SRC)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--discriminator", default=None, metavar="CKPT", help="keep this run checkpoint's D (fp16) "
                   "instead of SRC's own")
    d.add_argument("--no-discriminator", action="store_true", help="ship G alone (default: SRC's D too, if it has one)")
    args = p.parse_args(argv)
    ship(Path(args.src), args.name, Path(args.checkpoints), args.set, args.config, args.source,
         Path(args.discriminator) if args.discriminator else None, keep_d=not args.no_discriminator)
    return 0


if __name__ == "__main__":
    cli_main(main)
