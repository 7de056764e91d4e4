"""Regenerate REPORT.md and its figures (report/) from the shipped checkpoints and the data folder.

    python scripts/make_report.py --data hw2_data                  # the committed report (~30 min, 2-core CPU)
    python scripts/make_report.py --data hw2_data --fast           # tiny subsets: checks the generator itself

Every number in REPORT.md is computed by this run (FID, IS, face score, digit accuracy, the problem-3
table) or read from the JSON that the training run wrote beside a checkpoint (training time, steps,
command), which says so. A number that cannot be measured here is written as "not available" with
the reason. ``--fast`` uses tiny subsets (FID of a few images means nothing: the report says so);
the test suite runs it on tiny checkpoints. Sections: problem 1 (models, first 32 faces, curves,
FID / IS / face score, discussion), problem 2 (architectures, 10x10 grids, reverse process,
accuracy and FID per model, sampler speed table), problem 3 (accuracy table, t-SNE, training times).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]

import torch

from common.errors import UserError, cli_main

P2_MODELS = ("diffusion", "acgan", "sagan")


# ----------------------------------------------------------------------------- helpers
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPU threads, {gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def fmt(x, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "not available"
    return f"{100 * x:.{digits}f} %" if pct else f"{x:.{digits}f}"


def quiet(fn, *args, **kw):
    """Run fn with its stdout captured (the scripts print their own summaries); returns (result, text)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        res = fn(*args, **kw)
    return res, buf.getvalue()


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>\n\n```\n{body.rstrip()}\n```\n</details>\n"


P1_FID_TARGETS = {"A": 27.0, "B": 18.0}  # the project's aims for the face GANs (SPEC: strong baseline 27)


def history_block(ctx: "Ctx", name: str, title: str, png: Path, target: float | None, second: str) -> list[str]:
    """The training history of one shipped model (``checkpoints/logs/<name>/history.jsonl``, see
    common/history.py): its figure and a table of what each stage gained; [] when there is none."""
    from common.history import plot_history, read_history, stage_summary
    rows = read_history(ctx.ckpts / "logs" / name / "history.jsonl")
    if not plot_history(rows, png, title, target, second):
        return []
    lines = [f"{title}: " + ctx.img(png, f"{title} history"), "",
             "| stage | steps (all stages) | snapshots | best FID | gain on the best before |", "|---|---|---|---|---|"]
    for i, st in enumerate(stage_summary(rows)):
        gain = "-" if i == 0 else f"{st['gain']:.2f}"
        lines.append(f"| {st['stage']} | {st['from']}-{st['to']} | {st['n']} | {st['best_fid']:.2f} | {gain} |")
    return lines + [""]


class Ctx:
    def __init__(self, data: Path, ckpts: Path, md: Path, out: Path, fast: bool, device: str):
        self.data, self.ckpts, self.md, self.out, self.fast = data, ckpts, md, out, fast
        self.device = device
        self.tmp = Path(tempfile.mkdtemp(prefix="make_report_"))
        self.n_p1 = 32 if fast else 1000
        self.per_digit = 2 if fast else 100
        self.notes: list[str] = []
        self.fid_dims = 64 if fast else 2048  # 2048-d sqrtm of a few images is slow and meaningless

    def img(self, path: Path, alt: str) -> str:
        return f"![{alt}]({rel(path, self.md.parent)})"


# ----------------------------------------------------------------------------- problem 1
def fid_folder(gen: Path, ref: Path, ctx: Ctx) -> float | None:
    from common.fid import fid_from_folders
    try:
        return fid_from_folders(gen, ref, device=ctx.device, progress=True, dims=ctx.fid_dims)
    except UserError as e:
        ctx.notes.append(f"FID {gen.name} vs {ref}: {e}")
        return None


def fid_cached(real: Path, ref: Path, ctx: Ctx) -> float:
    """FID of a fixed real subset vs a reference folder; both statistics cached (FID is symmetric)."""
    from common import fid as F
    return F.frechet_distance(F.reference_statistics(real, device=ctx.device, dims=ctx.fid_dims),
                              F.reference_statistics(ref, device=ctx.device, dims=ctx.fid_dims))


def inception_score_or_reason(folder: Path, ctx: Ctx) -> tuple[float | None, str]:
    from common.inception_score import inception_score, is_weights_path
    if not is_weights_path().is_file():
        return None, f"not available: no Inception-v3 ImageNet weights at {is_weights_path()} (cannot be downloaded here)"
    try:
        m, s = inception_score(folder, splits=2 if ctx.fast else 10, device=ctx.device, progress=True)
        return m, f"{m:.3f} +- {s:.3f}"
    except UserError as e:
        return None, f"not available: {e}"


def section_p1(ctx: Ctx) -> str:
    import p1_figures

    from common.face_score import face_score
    from p1_gan.inference import main as hw2_1

    out = ctx.out / "p1"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["## Problem 1: face GANs", ""]
    ckpt = {m: ctx.ckpts / f"p1_method{m}.pt" for m in "AB"}
    args = ["--out", str(out)]
    for m in "AB":
        args += [f"--checkpoint-{m}", str(ckpt[m]), f"--run-{m}", str(ctx.ckpts / "logs" / f"p1_method{m}")]
    quiet(p1_figures.main, args)
    lines += ["Generators exactly as `hw2_1.sh` builds them (method A: the reference DCGAN; method B: the same",
              "generator, a spectral-norm discriminator, hinge loss, DiffAugment and an EMA of G).", ""]
    if (out / "models.txt").is_file():
        lines.append(details("print(model) of methods A and B", (out / "models.txt").read_text()))
    rows, res, is_reason = [], {}, ""
    val = ctx.data / "face" / "val"
    for m in "AB":
        info = read_json(ckpt[m].with_suffix(".json")) or {}
        if not ckpt[m].is_file():
            rows.append(f"| {m} | - | not available: no checkpoint {rel(ckpt[m], REPO)} | | | |")
            continue
        k = int((info.get("config") or {}).get("candidates", 1))
        # the default (best of k by D when the config says so), then the plain G beside it
        for label, extra in ([(f"{m} (best of {k} by its D, default)", []), (f"{m}, plain G (`--candidates 1`)",
                              ["--candidates", "1"])] if k > 1 else [(m, [])]):
            folder = ctx.tmp / f"p1_{m}{'_plain' if extra else ''}"
            quiet(hw2_1, [str(folder), "--checkpoint", str(ckpt[m]), "--n", str(ctx.n_p1), "--device", ctx.device,
                          *extra])
            fid = fid_folder(folder, val, ctx) if val.is_dir() else None
            is_val, is_text = inception_score_or_reason(folder, ctx)
            face = face_score(folder).percent
            if not extra:
                res[m] = {"fid": fid, "is": is_val, "face": face}
            train = info.get("training", {})
            if is_val is None:
                is_reason, is_text = is_text, "not available (see below)"
            steps = train.get("steps_total", info.get("step", "?"))  # a run that went on from earlier runs: all of them
            rows.append(f"| {label} | {steps} ({train.get('epochs', '?')} epochs) | {fmt(fid)} | {is_text} | "
                        f"{face:.1f} % | {train.get('device', '?')}, {train.get('hours', '?')} h |")
    real = None
    train_dir = ctx.data / "face" / "train"
    if train_dir.is_dir() and val.is_dir():  # the same metrics on real images, for scale
        from common.fid import subset_folder
        folder = subset_folder(train_dir, sorted(os.listdir(train_dir))[:ctx.n_p1], ctx.tmp, f"face_train_first{ctx.n_p1}")
        real = {"fid": fid_cached(folder, val, ctx), "face": face_score(folder).percent}
        rows.append(f"| real face/train (first {ctx.n_p1}) | - | {fmt(real['fid'])} | - | {real['face']:.1f} % | - |")
    n_val = len(os.listdir(val)) if val.is_dir() else 0
    lines += ["", f"### Metrics ({ctx.n_p1} images from `hw2_1.sh` (seed 0) vs face/val ({n_val} images))", "",
              "| method | step | FID | IS | face score | trained on |", "|---|---|---|---|---|---|", *rows, ""]
    if is_reason:
        lines += [f"IS {is_reason}.", ""]
    lines += ["FID: pytorch-fid's network and formula (`common/fid.py`, checked against `python -m pytorch_fid`); "
              "face score: share of images in which dlib's HOG detector finds exactly one face.", ""]
    lines += ["### First 32 generated faces", ""]
    for m in "AB":
        f = out / f"first32_{m}.png"
        lines.append(f"Method {m}: " + (ctx.img(f, f"first 32 faces, method {m}") if f.is_file() else "no checkpoint"))
        lines.append("")
    lines += ["### Training curves", ""]
    for m in "AB":
        f = out / f"curves_{m}.png"
        lines.append(f"Method {m}: " + (ctx.img(f, f"curves {m}") if f.is_file() else
                                         f"no training log in {rel(ctx.ckpts / 'logs' / f'p1_method{m}', REPO)}"))
        lines.append("")
    hist = [ln for m in "AB" for ln in history_block(ctx, f"p1_method{m}", f"method {m}", out / f"history_{m}.png",
                                                      P1_FID_TARGETS[m], "face_score")]
    if hist:
        lines += ["### Training history (every evaluated snapshot, all stages)", "",
                  "FID and face score of `hw2_1.sh`'s 1000 images from each evaluated snapshot "
                  "(`scripts/p1_eval_snapshots.py --history`), over every stage the shipped weights went through; "
                  "dashed: the FID aim.", "", *hist]
    lines += ["### Discussion", "", discuss_p1(res, real), ""]
    return "\n".join(lines)


def discuss_p1(res: dict, real: dict | None) -> str:
    if len(res) < 2 or any(res[m]["fid"] is None for m in "AB"):
        return "Both methods are needed for a comparison; see the table for what was measured."
    a, b = res["A"], res["B"]
    better = "A" if a["fid"] < b["fid"] else "B"
    worse = "B" if better == "A" else "A"
    tie = abs(a["fid"] - b["fid"]) < 0.5  # below the spread of FID on 1000 images: no winner to name
    if tie:
        s = (f"The two methods have about the same FID (A {a['fid']:.2f}, B {b['fid']:.2f}): their images are "
             f"equally far from face/val in Inception feature statistics. ")
    else:
        s = (f"Method {better} has the lower FID ({res[better]['fid']:.1f} against {res[worse]['fid']:.1f}), so its "
             f"images are closer to face/val in Inception feature statistics. ")
    fb = "A" if a["face"] > b["face"] else "B"
    s += (f"Method {fb} has the higher face score ({res[fb]['face']:.1f} % against "
          f"{res['B' if fb == 'A' else 'A']['face']:.1f} %)")
    s += ". " if fb == better or tie else (": the two metrics disagree, which usually means one method draws "
                                           "cleaner, more frontal faces while the other covers more of the data's variety. ")
    if real is not None and real["fid"] is not None:
        s += (f"For scale, {real['fid']:.1f} is the FID of real training images measured the same way "
              f"(face score {real['face']:.1f} %): the gap to it is what training still has to close.")
    return s


# ----------------------------------------------------------------------------- problem 2
def section_p2(ctx: Ctx) -> str:
    import p2_figures

    from common.data import save_pngs
    from common.digit_classifier import accuracy_of_folder, load_classifier
    from common.training import load_checkpoint
    from p2_diffusion_acgan.inference import Generator, generate_all

    out = ctx.out / "p2"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["## Problem 2: conditional digit generators (MNIST-M)", ""]
    fig_args = ["--out", str(out)] + [a for m in P2_MODELS for a in (f"--{m}", str(ctx.ckpts / f"p2_{m}.pt"))
                                      if (ctx.ckpts / f"p2_{m}.pt").is_file()]
    if ctx.fast:
        fig_args += ["--steps", "2"]
    quiet(p2_figures.main, fig_args)
    try:
        clf = load_classifier()
    except UserError as e:
        clf, why = None, str(e)
    from common import fid as F
    from common.fid import digit_split_folder
    from p2_diffusion_acgan.evaluate import mnistm_val_stats
    mn = ctx.data / "digits" / "mnistm"
    val_stats = None
    if (mn / "val.csv").is_file():  # cached by content after the first run
        val_stats = mnistm_val_stats(str(ctx.data), dims=ctx.fid_dims, device=ctx.device)
    else:
        ctx.notes.append(f"no FID reference for problem 2: {mn / 'val.csv'} not found")

    def fid_of(folder: Path) -> float | None:
        if val_stats is None:
            return None
        return F.frechet_distance(F.compute_statistics(folder, device=ctx.device, progress=True, dims=ctx.fid_dims),
                                  val_stats)

    rows, per_digit_rows = [], []
    for m in P2_MODELS:
        path = ctx.ckpts / f"p2_{m}.pt"
        if not path.is_file():
            rows.append(f"| {m} | not available: no {rel(path, REPO)} | | | | |")
            continue
        gen = Generator(load_checkpoint(path), ctx.device)
        info = read_json(path.with_suffix(".json")) or {}
        trained = f"{info.get('step', '?')} steps, {info.get('training', {}).get('device', '?')}"
        variants = [(m, {"steps": 2} if (ctx.fast and m == "diffusion") else {})]
        if m != "diffusion" and gen.gan_options()[1] > 1:  # the default ranks candidates: also the plain G
            variants.append((f"{m}, plain G (`--candidates 1`)", {"candidates": 1}))
        for i, (label, opts) in enumerate(variants):
            t0 = time.time()
            x, y, names = generate_all(gen, 0, 250 if ctx.device == "cpu" else 1000, per_digit=ctx.per_digit,
                                       progress=False, **opts)
            secs = time.time() - t0
            folder = ctx.tmp / f"p2_{m}_{i}"
            save_pngs(x, names, folder)
            if clf is not None:
                r = accuracy_of_folder(folder, clf)
                worst = min(r.per_digit, key=r.per_digit.get)
                acc = f"{100 * r.accuracy:.1f} % (worst: {worst} at {100 * r.per_digit[worst]:.0f} %)"
                per_digit_rows.append(f"| {label} | " + " | ".join(f"{100 * r.per_digit[d]:.0f}" for d in range(10)) + " |")
            else:
                acc = f"not available: {why}"
            rows.append(f"| {label} | {acc} | {fmt(fid_of(folder))} | {p2_setting(gen, opts)} | {secs:.0f} s | {trained} |")
    real_fid = None
    if val_stats is not None and (mn / "train.csv").is_file():
        folder = digit_split_folder(ctx.data, "mnistm", "train", ctx.tmp, limit=10 * ctx.per_digit)
        real_fid = F.frechet_distance(F.reference_statistics(folder, device=ctx.device, dims=ctx.fid_dims), val_stats)
    n = 10 * ctx.per_digit
    lines += [f"### Accuracy and FID ({n} images from `hw2_2.sh`'s code path, seed 0, vs mnistm val)", "",
              "| model | course-classifier accuracy | FID | sampling | time (this machine) | trained |",
              "|---|---|---|---|---|---|", *rows,
              f"| real mnistm train (first {n}) | - | {fmt(real_fid)} | - | - | - |", ""]
    if per_digit_rows:
        lines += ["Per digit (%):", "", "| model | " + " | ".join(map(str, range(10))) + " |",
                  "|---|" + "---|" * 10, *per_digit_rows, ""]
    target = 1.5 * real_fid if real_fid is not None else None
    hist = [ln for m in P2_MODELS for ln in history_block(ctx, f"p2_{m}", m, out / f"history_{m}.png", target, "accuracy")]
    if hist:
        lines += ["### Training history (every evaluated snapshot, all stages)", "",
                  "Accuracy and FID of `hw2_2.sh`'s 1000 digits from each evaluated snapshot "
                  "(`scripts/p2_eval_snapshots.py --history`; GANs sampled plainly, one noise per image, as most "
                  "snapshots keep no D to rank candidates with (only a run's final one does); diffusion with the "
                  "sampler its stage names)"
                  + (f"; dashed: the FID target, 1.5 x the real-data FID "
                  f"({target:.1f})" if target else "") + ".", "", *hist]
    lines += ["### Samples", ""]
    for m in P2_MODELS:
        f = out / f"grid_{m}.png"
        if f.is_file():
            lines += [f"{m} (rows = digits 0-9): " + ctx.img(f, f"{m} grid"), ""]
    f = out / "reverse_process.png"
    if f.is_file():
        lines += ["Reverse process of the first \"0\" (six evenly spaced timesteps, t = T ... 0): " +
                  ctx.img(f, "reverse process"), ""]
    for m in P2_MODELS:
        f = out / f"architecture_{m}.txt"
        if f.is_file():
            lines.append(details(f"print(model): {m}", f.read_text()))
    lines += ["### Sampler speed and quality (`scripts/bench_p2.py`, this machine)", "", bench_p2_table(ctx), ""]
    return "\n".join(lines)


def p2_setting(gen, opts: dict) -> str:
    """How a problem-2 row was sampled, from the checkpoint's defaults and the row's overrides."""
    if gen.kind == "p2_diffusion":
        c = gen.diff_cfg
        from common.training import resolve_precision
        return (f"{c.sampler}, {opts.get('steps', c.sample_steps)} steps ({c.spacing} spacing), w = {c.guidance:g}, "
                f"{resolve_precision(c.sample_precision, gen.device)} U-Net")
    _, k, accept = gen.gan_options(candidates=opts.get("candidates"))
    if k == 1:
        return "one forward pass"
    if accept >= 1:
        return f"best of {k} noises by D's class head (the most probable)"
    return f"best of {k} noises by D's class head (the first with p >= {accept:g}, else the most probable)"


def bench_p2_table(ctx: Ctx) -> str:
    args = [sys.executable, str(REPO / "scripts" / "bench_p2.py"), "--device", ctx.device, "--out", str(ctx.tmp / "bench"),
            "--checkpoints", str(ctx.ckpts)]
    if ctx.fast:
        args += ["--settings", "dpm++2m:2", "--train-steps", "1", "--probe-batch", "10", "--train-batch", "8"]
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode != 0:
        return f"not available: bench_p2.py failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
    return "\n".join("##" + ln if ln.startswith("## ") else ln for ln in r.stdout.splitlines()
                     if not ln.startswith("# bench_p2")).strip()


# ----------------------------------------------------------------------------- problem 3
def section_p3(ctx: Ctx) -> str:
    import p3_table
    import p3_tsne
    out = ctx.out / "p3"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["## Problem 3: unsupervised domain adaptation", ""]
    common = ["--data", str(ctx.data), "--checkpoints", str(ctx.ckpts), "--device", ctx.device,
              "--cache-dir", str(ctx.tmp / "p3_cache")]
    quiet(p3_table.main, common + ["--out", str(out / "accuracy.md")])
    lines += ["### Accuracy on the target domain's validation split", "", (out / "accuracy.md").read_text().strip(), ""]
    quiet(p3_tsne.main, common + ["--out", str(out), "--n", "30" if ctx.fast else "1000"])
    times = []
    for j in sorted(ctx.ckpts.glob("p3_*.json")):
        info = read_json(j) or {}
        if "train_time_total_s" in info:
            times.append(f"| {info.get('scenario')} | {info.get('mode')} | {info['train_time_total_s'] / 60:.1f} min "
                         f"({info.get('device', '?')}) | {info.get('step', '?')} | `{info.get('command', '?')}` |")
    if times:
        lines += ["### Training times (from each checkpoint's JSON, written by its training run)", "",
                  "| scenario | model | time | steps | command |", "|---|---|---|---|---|", *times, ""]
    pngs = sorted(out.glob("tsne_*.png"))
    if pngs:
        lines += ["### t-SNE of the features (left: by digit class, right: by domain)", ""]
        lines += [f"{p.stem.removeprefix('tsne_')}: {ctx.img(p, p.stem)}\n" for p in pngs]
    else:
        lines += ["t-SNE: not available (no checkpoint with its data)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def header(ctx: Ctx, seconds: float) -> str:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    src = ctx.data.resolve()
    marker = src / ".complete"
    origin = marker.read_text().strip() if marker.is_file() else "no download marker"
    mode = "FAST MODE: tiny subsets, numbers are meaningless (generator self-test)" if ctx.fast else "full"
    return "\n".join([
        "# Report (generated by `scripts/make_report.py`; do not edit by hand)", "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {commit}{dirty}",
        f"- machine: {machine()}",
        f"- data: `{ctx.data}` ({origin}); weights: `{rel(ctx.ckpts, REPO)}`",
        f"- mode: {mode}; this run took {seconds / 60:.1f} min",
        "", "Every number below was computed by this run, except training times/steps, which are read from "
        "the JSON each training run wrote beside its checkpoint.", ""])


def kept_sections(md: Path) -> dict[str, str]:
    """The ``## Problem N`` sections of an existing report, by name (``p1``..``p3``), each up to the next
    ``## Problem`` or ``## Notes`` heading: ``--only`` regenerates some and keeps the others."""
    if not md.is_file():
        return {}
    found = {}
    for chunk in re.split(r"(?m)^(?=## (?:Problem \d|Notes))", md.read_text()):
        m = re.match(r"## Problem (\d)", chunk)
        if m:
            found[f"p{m.group(1)}"] = chunk.rstrip("\n") + "\n"
    return found


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/make_report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="hw2_data", help="data folder in the official layout")
    p.add_argument("--checkpoints", default=str(REPO / "checkpoints"))
    p.add_argument("--md", default=str(REPO / "REPORT.md"), help="the markdown file to write")
    p.add_argument("--out", default=str(REPO / "report"), help="figure folder")
    p.add_argument("--fast", action="store_true", help="tiny subsets (tests / CI)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--only", nargs="+", choices=("p1", "p2", "p3"), default=["p1", "p2", "p3"])
    a = p.parse_args(argv)
    data, ckpts = Path(a.data), Path(a.checkpoints)
    if not data.is_dir():
        raise UserError(f"data folder not found: {data} (run: bash hw2_download.sh)")
    if not ckpts.is_dir():
        raise UserError(f"checkpoint folder not found: {ckpts}")
    ctx = Ctx(data, ckpts, Path(a.md), Path(a.out), a.fast, a.device)
    t0 = time.time()
    parts = []
    kept = kept_sections(ctx.md)  # sections not in --only stay as the last full run wrote them
    try:
        for name, fn in (("p1", section_p1), ("p2", section_p2), ("p3", section_p3)):
            if name not in a.only:
                if name in kept:
                    parts.append(kept[name])
                    ctx.notes.append(f"{name.upper()} section kept from the previous REPORT.md (this run: --only {' '.join(a.only)})")
            else:
                print(f"[make_report] {name} ...", flush=True)
                t = time.time()
                parts.append(fn(ctx))
                print(f"[make_report] {name} done in {time.time() - t:.0f} s", flush=True)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    notes = ["## Notes", "", *[f"- {n}" for n in ctx.notes], ""] if ctx.notes else []
    text = header(ctx, time.time() - t0) + "\n" + "\n".join(parts) + "\n" + "\n".join(notes)
    ctx.md.parent.mkdir(parents=True, exist_ok=True)
    tmp = ctx.md.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, ctx.md)
    print(f"wrote {ctx.md} and figures in {ctx.out} ({(time.time() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    cli_main(main)
