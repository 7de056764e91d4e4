"""t-SNE of the feature space of problem 3's models on validation images -> PNGs.

    python scripts/p3_tsne.py [--data hw2_data] [--checkpoints checkpoints] [--out report/p3] [--n 1000]

For every shipped checkpoint ``p3_<source>_<target>_<mode>.pt`` whose data exist: features of
n source + n target validation images, embedded with scikit-learn's TSNE, drawn twice side by
side (coloured by digit class, and by domain) into ``<out>/tsne_<source>_<target>_<mode>.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.manifold import TSNE

from common.errors import UserError, cli_main
from common.training import pick_device
from p3_dann.analysis import SCENARIOS, add_report_args, checkpoint_path, domain_features
from p3_dann.config import MODES


def plot_tsne(ck: Path, data_root: str, out: Path, n: int, device, cache_dir: str) -> Path:
    f, y, d, cfg = domain_features(ck, data_root, device, n, cache_dir=cache_dir)
    tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(f) - 1) / 3), random_state=0)
    z = tsne.fit_transform(f.numpy())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    sc = axes[0].scatter(z[:, 0], z[:, 1], c=y.numpy(), cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
    fig.colorbar(sc, ax=axes[0], ticks=range(10), label="digit")
    axes[0].set_title("by class")
    for dom, name, colour in ((0, cfg.source, "tab:blue"), (1, cfg.target, "tab:red")):
        m = (d == dom).numpy()
        axes[1].scatter(z[m, 0], z[m, 1], s=3, c=colour, label=f"{name} ({'source' if dom == 0 else 'target'})")
    axes[1].legend(markerscale=4, loc="best")
    axes[1].set_title("by domain")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"t-SNE of features, {cfg.source} -> {cfg.target}, {cfg.mode} (validation images)")
    fig.tight_layout()
    path = out / f"tsne_{cfg.source}_{cfg.target}_{cfg.mode}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_report_args(ap, "report/p3")
    ap.add_argument("--n", type=int, default=1000, help="images per domain")
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device, written = pick_device(args.device), []
    for s, t in SCENARIOS:
        for mode in args.modes:
            ck = checkpoint_path(s, t, mode, args.checkpoints)
            if ck.is_file():
                written.append(plot_tsne(ck, args.data_root, out, args.n, device, args.cache_dir))
                print(f"wrote {written[-1]}")
    if not written:
        raise UserError(f"no p3_<source>_<target>_<mode>.pt checkpoints in {args.checkpoints}")
    return 0


if __name__ == "__main__":
    cli_main(main)
