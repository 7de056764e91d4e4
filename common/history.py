"""Snapshot evaluation and the training history of a shipped model, across runs and machines.

A shipped model is usually trained in stages: a GPU run, CPU runs that go on from it (``--init-from``)
at a lower learning rate, and so on, each counting its steps from 0. Its *history file*
(``checkpoints/logs/<name>/history.jsonl``, committed beside the weights) has one JSON line per
evaluated snapshot, in the whole lineage's step count:

    {"step": 52411, "stage": "2026-11-26, CPU: lr 2e-5", "fid": 28.91, "face_score": 78.4,
     "checkpoint": "runs/cpu_s7_A_lr2e5/snapshots/step_0000750.pt", "run_step": 750, "shipped": true}

``step`` = ``run_step`` + the stage's offset (the steps of the stages before it). The snapshot
evaluators (``scripts/p1_eval_snapshots.py``, ``scripts/p2_eval_snapshots.py``) append to it with
``--history FILE --stage TEXT --step-offset N``; ``scripts/ship_checkpoint.py --history FILE``
marks the shipped snapshot; ``plot_history`` draws the curve (``scripts/make_report.py`` shows it),
so "has training stopped improving?" is a figure, not a memory.
"""
from __future__ import annotations

import json
import math
import re
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from common.errors import UserError
from common.training import atomic_write_bytes, load_checkpoint, read_jsonl

METRIC_LABELS = {"face_score": "face score (%)", "accuracy": "course-classifier accuracy (%)"}



def save_figure(fig, path: str | Path, dpi: int = 120, **kw) -> None:
    """Lay out, write (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **kw)
    plt.close(fig)

def checkpoint_step(path: str | Path) -> int:
    """The training step of a snapshot / last.pt / shipped checkpoint (from the file, else its name)."""
    m = re.search(r"step_(\d+)", Path(path).name)
    if m:
        return int(m.group(1))
    step = load_checkpoint(path).get("step")
    if step is None:
        raise UserError(f"cannot tell the training step of {path} (no 'step' in it, no step_N in its name)")
    return int(step)


def evaluate_snapshots(checkpoints: Iterable[str | Path], out: str | Path,
                       evaluate: Callable[[Path], dict], tag: str = "") -> list[dict]:
    """Evaluate each checkpoint once: one JSON line per checkpoint appended to ``out``; a checkpoint
    already there (same path, size and ``tag``: how it was evaluated, e.g. the sampling options) is
    not evaluated again, so an interrupted run resumes. Returns the records, in the order given."""
    cks = [Path(c) for c in checkpoints]
    for c in cks:
        if not c.is_file():
            raise UserError(f"checkpoint not found: {c}")
    out = Path(out)
    done = {(r["checkpoint"], r["size"], r.get("tag", "")): r for r in (read_jsonl(out) if out.is_file() else [])}
    rows = []
    for c in cks:
        size = c.stat().st_size
        r = done.get((str(c), size, tag))
        if r is None:
            r = {"checkpoint": str(c), "size": size, **({"tag": tag} if tag else {}), **evaluate(c)}
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.write(json.dumps(r) + "\n")
        rows.append(r)
    return rows


def add_history_args(p) -> None:
    """``--threads``, ``--history``, ``--stage``, ``--step-offset`` of the snapshot evaluators."""
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--history", default=None, help="also add the results to this training-history file")
    p.add_argument("--stage", default="", help="with --history: the stage these snapshots belong to")
    p.add_argument("--step-offset", type=int, default=0, help="with --history: steps of the stages before")


def apply_history_args(a) -> None:
    """Check them (one-line errors) and set the thread count."""
    if a.history and not a.stage:
        raise UserError("--history needs --stage (a few words: date, device and setting)")
    if a.step_offset < 0:
        raise UserError(f"--step-offset must be >= 0, got {a.step_offset}")
    if a.threads > 0:
        import torch
        torch.set_num_threads(a.threads)


def read_history(path: str | Path) -> list[dict]:
    """History rows sorted by step ([] when the file does not exist)."""
    path = Path(path)
    return sorted(read_jsonl(path), key=lambda r: r["step"]) if path.is_file() else []


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["step"])).encode())


def add_to_history(path: str | Path, records: Iterable[dict], stage: str, step_offset: int,
                   metrics: tuple[str, ...]) -> list[dict]:
    """Put evaluation records (with ``checkpoint`` and the ``metrics``) into the history file under
    ``stage``; a checkpoint already in it is replaced, not repeated. Returns the new rows."""
    if not stage:
        raise UserError("--history needs --stage (a few words: date, device and setting)")
    if step_offset < 0:
        raise UserError(f"--step-offset must be >= 0, got {step_offset}")
    path = Path(path)
    added = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = []
    for r in records:
        run_step = checkpoint_step(r["checkpoint"])
        row = {"step": run_step + step_offset, "stage": stage, "checkpoint": r["checkpoint"], "run_step": run_step,
               "added": added}
        row.update({k: r[k] for k in metrics if k in r})
        new.append(row)
    before = read_history(path)
    prev = {r["checkpoint"]: r for r in before}
    for r in new:  # a re-evaluated snapshot keeps its shipped mark and its place in the order of stages
        old = prev.get(r["checkpoint"])
        if old is None:
            continue
        if old.get("shipped"):
            r["shipped"] = True
        if "added" in old:
            r["added"] = old["added"]
        else:
            del r["added"]
    keep = {r["checkpoint"] for r in new}
    _write(path, [r for r in before if r["checkpoint"] not in keep] + new)
    return new


def stages_in_order(rows: list[dict]) -> list[str]:
    """The stages in the order they were trained: by when their rows were first added (rows older than
    the ``added`` field count as earliest), then by first step. Steps alone would misplace a branch:
    a stage that went on from an earlier snapshot than the one before it (a new machine restarting
    from the shipped file) would sort before that stage and take its gain."""
    first: dict[str, tuple[str, int]] = {}
    for r in rows:
        key = (r.get("added", ""), r["step"])
        if r["stage"] not in first or key < first[r["stage"]]:
            first[r["stage"]] = key
    return sorted(first, key=first.get)


def mark_shipped(path: str | Path, checkpoint: str | Path) -> dict:
    """Mark the history row of ``checkpoint`` as the shipped one (and no other). Returns that row."""
    rows = read_history(path)
    hit = [r for r in rows if r["checkpoint"] == str(checkpoint)]
    if not hit:
        raise UserError(f"{checkpoint} is not in the history {path}: evaluate it first "
                        f"(scripts/p1_eval_snapshots.py or scripts/p2_eval_snapshots.py with --history)")
    for r in rows:
        r.pop("shipped", None)
    hit[-1]["shipped"] = True
    _write(Path(path), rows)
    return hit[-1]


def plot_history(rows: list[dict], out: str | Path, title: str, target: float | None = None,
                 second: str | None = None) -> bool:
    """FID against the lineage's step, one colour per stage, the shipped snapshot starred, the FID
    target dashed; ``second`` (``face_score`` or ``accuracy``) on a right-hand axis. False: no rows."""
    rows = [r for r in rows if "fid" in r]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = [r for r in rows if second and second in r]
    fig, axes = plt.subplots(2 if vals else 1, 1, figsize=(11, 6 if vals else 4.2), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3] if vals else [1]})
    ax = axes[0, 0]
    stages = stages_in_order(rows)
    colors = plt.get_cmap("tab10")
    for i, s in enumerate(stages):
        rs = [r for r in rows if r["stage"] == s]
        ax.plot([r["step"] for r in rs], [r["fid"] for r in rs], marker="o", color=colors(i % 10),
                label=textwrap.fill(s, 70))  # long stage names would squeeze the axes
        if vals:
            rs = [r for r in rs if second in r]
            axes[1, 0].plot([r["step"] for r in rs], [r[second] * (100 if second == "accuracy" else 1) for r in rs],
                            marker=".", color=colors(i % 10))
    for r in (r for r in rows if r.get("shipped")):
        ax.plot([r["step"]], [r["fid"]], marker="*", markersize=18, color="gold", markeredgecolor="k",
                linestyle="none", label=f"shipped: FID {r['fid']:.2f}", zorder=5)
    if target is not None:
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target FID {target:g}")
    ax.set(ylabel="FID (1000 images)", title=f"{title}: FID of the evaluated snapshots (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if vals:
        axes[1, 0].set(ylabel=METRIC_LABELS.get(second, second))
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel("training step (all stages, counted from the first)")
    save_figure(fig, out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def stage_summary(rows: list[dict]) -> list[dict]:
    """Per stage, in the order trained (``stages_in_order``): {"stage", "from", "to" (lineage steps), "n",
    "best_fid", "gain"}; ``gain`` = how far the stage brought the best FID of the stages before it down
    (0 when it did not)."""
    out, best = [], math.inf
    for s in stages_in_order(rows):
        rs = [r for r in rows if r["stage"] == s and "fid" in r]
        if not rs:
            continue
        b = min(r["fid"] for r in rs)
        out.append({"stage": s, "from": rs[0]["step"], "to": rs[-1]["step"], "n": len(rs), "best_fid": b,
                    "gain": 0.0 if math.isinf(best) else max(0.0, best - b)})
        best = min(best, b)
    return out


def main(argv=None) -> int:
    """``python -m common.history HISTORY.jsonl --out history.png [--target 27]``: draw one history file."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m common.history", description=main.__doc__)
    p.add_argument("history")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default=None)
    p.add_argument("--target", type=float, default=None, help="FID target (a dashed line)")
    a = p.parse_args(argv)
    rows = read_history(a.history)
    if not rows:
        raise UserError(f"no training history at {a.history}")
    second = next((k for k in METRIC_LABELS if any(k in r for r in rows)), None)
    plot_history(rows, a.out, a.title or Path(a.history).parent.name, a.target, second)
    for s in stage_summary(rows):
        print(f"{s['stage']}: steps {s['from']}-{s['to']}, best FID {s['best_fid']:.2f} (gain {s['gain']:.2f})")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    from common.errors import cli_main
    cli_main(main)
