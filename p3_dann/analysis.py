"""Evaluation helpers for the report scripts: shipped checkpoint names, validation accuracy,
features for t-SNE. (Scripts: scripts/p3_table.py, scripts/p3_tsne.py.)"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from common.checkpoint import CHECKPOINT_DIR
from p3_dann.config import MODES, Config
from p3_dann.data import load_domain
from p3_dann.evaluate import accuracy, load_model, predict

SCENARIOS = (("mnistm", "svhn"), ("mnistm", "usps"), ("svhn", "mnistm"), ("usps", "svhn"))


def add_report_args(ap, out_default: str) -> None:
    """The options scripts/p3_table.py and p3_tsne.py share: data, checkpoints, output, cache, device."""
    from common.cli import add_deprecated
    ap.add_argument("--data", dest="data_root", default="hw2_data", help="data folder holding digits/<domain>/ (default: hw2_data)")
    add_deprecated(ap, "--data-root", "--data", "data_root")
    ap.add_argument("--checkpoints", default="checkpoints", help="folder with p3_<source>_<target>_<mode>.pt (default: checkpoints)")
    ap.add_argument("--out", default=out_default, help=f"where to write (default: {out_default})")
    ap.add_argument("--cache-dir", default="runs/p3_cache", help="decoded data cache (default: runs/p3_cache)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")


def checkpoint_path(source: str, target: str, mode: str, folder: str | Path = CHECKPOINT_DIR) -> Path:
    return Path(folder) / f"p3_{source}_{target}_{mode}.pt"


def val_split(data_root: str, domain: str, cache_dir: str = "runs/p3_cache") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 28, 28) validation images + labels of one domain."""
    cfg = dataclasses.replace(Config(), data_root=str(data_root), cache_dir=cache_dir)
    return load_domain(cfg, domain, "val", progress=False)


def evaluate_checkpoint(path: str | Path, data_root: str, device: torch.device,
                        cache_dir: str = "runs/p3_cache") -> dict:
    """Accuracy of a checkpoint on the validation split of its target (and source) domain."""
    model, cfg = load_model(path, device)
    out = {"source": cfg.source, "target": cfg.target, "mode": cfg.mode}
    for key, dom in (("target_val_acc", cfg.target), ("source_val_acc", cfg.source)):
        x, y = val_split(data_root, dom, cache_dir)
        out[key] = accuracy(model, x, y, device)
    return out


def domain_features(path: str | Path, data_root: str, device: torch.device, n_per_domain: int = 1000,
                    seed: int = 0, cache_dir: str = "runs/p3_cache"):
    """Features (2n, D), class labels (2n,), domain ids (2n,: 0 source, 1 target) of a random
    subset of both validation splits, plus the checkpoint's config."""
    model, cfg = load_model(path, device)
    g = torch.Generator().manual_seed(seed)
    feats, labels, domains = [], [], []
    for d, dom in enumerate((cfg.source, cfg.target)):
        x, y = val_split(data_root, dom, cache_dir)
        idx = torch.randperm(len(x), generator=g)[:n_per_domain]
        feats.append(predict(model, x[idx], device, features=True))
        labels.append(y[idx])
        domains.append(torch.full((len(idx),), d))
    return torch.cat(feats), torch.cat(labels), torch.cat(domains), cfg


__all__ = ["MODES", "SCENARIOS", "checkpoint_path", "val_split", "evaluate_checkpoint", "domain_features"]
