"""Problem 1 report figures: first 32 generated faces of A and B, loss/FID curves, model prints.

    python scripts/p1_figures.py --out figures/p1                      # shipped checkpoints + runs/p1_{A,B}
    python scripts/p1_figures.py --images-A out_A --images-B out_B     # grids from hw2_1.sh outputs

Writes ``first32_A.png`` / ``first32_B.png`` (4 x 8 grids of images 0000-0031: from a folder of
hw2_1.sh outputs, or generated from the checkpoint exactly as hw2_1.sh does), ``curves_<M>.png``
(D and G losses, and FID when logged, against the step, from ``<run>/metrics.jsonl``) and
``models.txt`` (``print(model)`` of both methods at the checkpoint's widths). Missing inputs are
skipped with a note.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]

import torch

from common.history import save_figure
from common.data import list_images, load_image, save_grid, to_float
from common.errors import cli_main
from common.gan import generate
from common.training import read_jsonl
from p1_gan.config import build_models, method_defaults
from p1_gan.inference import default_checkpoint, load_generator


def first32(method: str, images: str | None, checkpoint: str | None) -> torch.Tensor | None:
    """Images 0-31 (32, 3, 64, 64) in [-1, 1] from a hw2_1.sh output folder or the checkpoint; None if absent."""
    if images is not None:
        names = list_images(images)[:32]
        return torch.stack([to_float(torch.from_numpy(load_image(Path(images) / n)).permute(2, 0, 1)) for n in names])
    path = Path(checkpoint) if checkpoint else default_checkpoint(method)
    if not path.is_file():
        print(f"skip first32_{method}.png: no checkpoint at {path}")
        return None
    G, cfg = load_generator(path)
    return generate(G, 32, cfg.z_dim, seed=0)  # same z as hw2_1.sh's first 32 (seed 0)


def plot_curves(run: Path, out: Path, title: str) -> bool:
    """Loss curves (and FID) from run/metrics.jsonl; False when there is nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_jsonl(run / "metrics.jsonl")
    train = [r for r in recs if r.get("kind") == "train"]
    evals = sorted((r for r in recs if r.get("kind") == "eval" and "fid" in r), key=lambda r: r["step"])
    if not train:
        print(f"skip {out.name}: no training records in {run / 'metrics.jsonl'}")
        return False
    ncols = 2 if evals else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    steps = [r["step"] for r in train]
    for key, label in (("loss_D", "discriminator"), ("loss_G", "generator")):
        ax.plot(steps, [r.get(key, float("nan")) for r in train], label=label, linewidth=1)
    ax.set(xlabel="step", ylabel="loss", title=f"{title}: losses")
    ax.legend()
    ax.grid(alpha=0.3)
    if evals:
        ax = axes[0, 1]
        ax.plot([r["step"] for r in evals], [r["fid"] for r in evals], marker="o")
        ax.set(xlabel="step", ylabel="FID", title=f"{title}: FID of the EMA/G snapshots")
        ax.grid(alpha=0.3)
    save_figure(fig, out)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/p1_figures.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="figures/p1", help="output folder")
    for m in ("A", "B"):
        p.add_argument(f"--images-{m}", default=None, help=f"hw2_1.sh --method {m} output folder")
        p.add_argument(f"--checkpoint-{m}", default=None, help=f"default checkpoints/p1_method{m}.pt")
        p.add_argument(f"--run-{m}", default=f"runs/p1_{m}", help="run folder with metrics.jsonl")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for m in ("A", "B"):
        x = first32(m, getattr(args, f"images_{m}"), getattr(args, f"checkpoint_{m}"))
        if x is not None:
            save_grid(x, out / f"first32_{m}.png", nrow=8)
            print(f"wrote {out / f'first32_{m}.png'}")
        if plot_curves(Path(getattr(args, f"run_{m}")), out / f"curves_{m}.png", f"method {m}"):
            print(f"wrote {out / f'curves_{m}.png'}")
        ck = getattr(args, f"checkpoint_{m}") or default_checkpoint(m)
        cfg = load_generator(Path(ck))[1] if Path(ck).is_file() else method_defaults(m)
        G, D = build_models(cfg)
        lines += [f"# method {m} (ngf={cfg.ngf}, ndf={cfg.ndf}, loss={cfg.loss})", str(G), str(D), ""]
    (out / "models.txt").write_text("\n".join(lines))
    print(f"wrote {out / 'models.txt'}")
    return 0


if __name__ == "__main__":
    cli_main(main)
