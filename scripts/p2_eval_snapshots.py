"""Accuracy and FID of problem-2 generator checkpoints, exactly as graded: hw2_2's 1000 PNGs (seed 0)
-> the course classifier (overall and worst digit) and FID vs mnistm val (pytorch-fid convention).

    python scripts/p2_eval_snapshots.py runs/cpu_s5_acgan_realaux/snapshots/step_00*.pt
    python scripts/p2_eval_snapshots.py runs/x/snapshots/*.pt --history checkpoints/logs/p2_acgan/history.jsonl \\
        --stage "2026-11-26, CPU: from scratch"

GANs are sampled plainly (one noise per image) unless ``--candidates`` / ``--accept-prob`` say
otherwise (D ranks the candidates: a run's final snapshot keeps it, earlier ones do not; ship one
with ``scripts/ship_checkpoint.py --discriminator RUN/last.pt`` first); diffusion with the
checkpoint's sampler unless ``--sampler``, ``--steps``, ``--guidance``, ``--spacing``, ``--guidance-interval`` say
otherwise. One JSON line per checkpoint is appended to ``--out`` (default: ``snapshot_eval.jsonl``
beside the first checkpoint); checkpoints already there with the same options (same path and size)
are skipped, so an interrupted run resumes. ``--history`` as in ``scripts/p1_eval_snapshots.py`` (``common/history.py``).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Sequence

from common.cli import add_deprecated
from common.errors import UserError, cli_main
from common.history import add_history_args, add_to_history, apply_history_args, evaluate_snapshots
from common.training import PRECISIONS
from p2_diffusion_acgan.schedulers import SPACINGS


TUNING_SLICE = 2000  # --fid-ref train: the first N mnistm train digits, a reference to tune against (not val)


def reference_stats(data_root: str, ref: str, dims: int):
    """FID statistics of mnistm val (``val``, what is reported) or of the train slice (``train``)."""
    from common import fid
    from p2_diffusion_acgan.evaluate import mnistm_val_stats
    if ref == "val":
        return mnistm_val_stats(data_root, dims=dims)
    with tempfile.TemporaryDirectory(prefix="p2_ref_") as tmp:
        return fid.reference_statistics(fid.digit_split_folder(data_root, "mnistm", "train", Path(tmp), limit=TUNING_SLICE), dims=dims)


def evaluate_checkpoint(ckpt: Path, data_root: str, options: list[str], classifier: str | None = None,
                        dims: int = 2048, fid_refs: Sequence[str] = ("val",)) -> dict:
    from common import fid
    from common.digit_classifier import accuracy_of_folder
    from p2_diffusion_acgan.inference import main as generate_main
    from common.training import load_checkpoint
    options = options_for(load_checkpoint(ckpt).get("kind"), options)
    with tempfile.TemporaryDirectory(prefix="p2_eval_") as tmp:
        t0 = time.time()
        generate_main([str(Path(tmp) / "out"), "--checkpoint", str(ckpt), "--device", "cpu", *options])
        tmp = str(Path(tmp) / "out")
        rec: dict = {"generate_s": round(time.time() - t0, 1), "options": " ".join(options)}
        r = accuracy_of_folder(tmp, classifier)
        worst = min(r.per_digit, key=r.per_digit.get)
        rec.update(n=r.n, accuracy=r.accuracy, worst_digit=worst, worst_digit_acc=r.per_digit[worst])
        gen = fid.compute_statistics(tmp, progress=True, dims=dims)  # one Inception pass for every reference
        for ref in fid_refs:
            rec["fid" if ref == "val" else "fid_train_slice"] = fid.frechet_distance(gen, reference_stats(data_root, ref, dims))
        if dims != 2048:
            rec["fid_dims"] = dims
    return rec


GAN_FLAGS = ("--candidates", "--accept-prob")


def options_for(kind: str | None, options: list[str]) -> list[str]:
    """``options`` less the GAN flags for a diffusion checkpoint (hw2_2 refuses options a model ignores)."""
    if kind not in ("p2_diffusion", "p2_diffusion_train"):
        return options
    out, skip = [], False
    for i, o in enumerate(options):
        if skip:
            skip = False
            continue
        if o in GAN_FLAGS:
            skip = True
            continue
        out.append(o)
    return out


def sampling_options(a: argparse.Namespace) -> list[str]:
    """hw2_2 (inference) flags for the sampling options given (GANs read the first two only)."""
    options = ["--candidates", str(a.candidates), "--accept-prob", str(a.accept_prob)]
    for flag, v in (("--sampler", a.sampler), ("--steps", a.steps), ("--guidance", a.guidance), ("--spacing", a.spacing),
                    ("--precision", a.precision), ("--seed", a.seed), ("--guide", a.guide),
                    ("--guide-weight", a.guide_weight)):
        if v is not None:
            options += [flag, str(v)]
    if a.guidance_interval is not None:
        options += ["--guidance-interval", *map(str, a.guidance_interval)]
    return options


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/p2_eval_snapshots.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", dest="data_root", default="hw2_data", help="holds digits/mnistm (the FID reference: val) (default: hw2_data)")
    add_deprecated(p, "--data-root", "--data", "data_root")
    p.add_argument("--classifier", default=None, help="course Classifier.pth (default ../shared/evaluators/)")
    p.add_argument("--out", default=None)
    p.add_argument("--fid-dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                   help="Inception features for FID (2048, the standard; fewer only for quick checks)")
    p.add_argument("--candidates", type=int, default=1, help="GANs: noises per image ranked by D (default 1: plain G)")
    p.add_argument("--accept-prob", type=float, default=1.0,
                   help="GANs with --candidates: keep the first candidate this sure under D "
                        "(default 1: the most probable)")
    p.add_argument("--sampler", default=None, help="diffusion sampler (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="diffusion guidance w (default: the checkpoint's)")
    p.add_argument("--spacing", choices=SPACINGS, default=None, help="diffusion timestep spacing (default: checkpoint's)")
    p.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="diffusion: guide only at timesteps LO..HI (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=None, help="another draw than hw2_2.sh's seed 0 (robustness checks)")
    p.add_argument("--guide", default=None, metavar="PATH",
                   help="diffusion: autoguidance checkpoint, or none (default: the checkpoint's)")
    p.add_argument("--guide-weight", type=float, default=None, help="diffusion: autoguidance weight (default: the checkpoint's)")
    p.add_argument("--fid-ref", nargs="+", choices=("val", "train"), default=["val"],
                   help=f"FID references: mnistm val (reported as fid) and/or the first {TUNING_SLICE} mnistm train "
                        "digits (fid_train_slice: to tune sampling settings without looking at val) (default: val)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="diffusion U-Net forward passes: auto | fp32 | bf16 | fp16 (default: the checkpoint's)")
    add_history_args(p)
    a = p.parse_args(argv)
    apply_history_args(a)
    if a.history and "val" not in a.fid_ref:
        raise UserError("--history records the FID against mnistm val: add val to --fid-ref")
    val = Path(a.data_root) / "digits" / "mnistm"
    if not val.is_dir():
        raise UserError(f"mnistm data not found: {val} (run: bash hw2_download.sh)")
    out = Path(a.out) if a.out else Path(a.checkpoints[0]).parent / "snapshot_eval.jsonl"
    options = sampling_options(a)

    def evaluate(c: Path) -> dict:
        return evaluate_checkpoint(c, a.data_root, options, a.classifier, a.fid_dims, a.fid_ref)

    tag = " ".join(options) + f" dims {a.fid_dims}" + ("" if a.fid_ref == ["val"] else f" refs {' '.join(a.fid_ref)}")
    rows = evaluate_snapshots(a.checkpoints, out, evaluate, tag=tag)
    if a.history:
        add_to_history(a.history, rows, a.stage, a.step_offset, ("fid", "accuracy", "worst_digit_acc"))
        print(f"added {len(rows)} rows to {a.history}")
    key = "fid" if "val" in a.fid_ref else "fid_train_slice"
    for r in rows:
        fids = ", ".join(f"{name} {r[k]:.2f}" for k, name in (("fid", "FID vs val"), ("fid_train_slice", "FID vs train slice"))
                         if k in r)
        print(f"{r['checkpoint']}: accuracy {100 * r['accuracy']:.1f} % (worst {r['worst_digit']}: "
              f"{100 * r['worst_digit_acc']:.0f} %), {fids}")
    best = min(rows, key=lambda r: r[key])
    print(f"best {key}: {best['checkpoint']} ({best[key]:.2f})")
    return 0


if __name__ == "__main__":
    cli_main(main)
