"""Problem 3 data: one split of one digit domain decoded once to uint8 tensors (cached)."""
from __future__ import annotations

from pathlib import Path

import torch

from common.data import digit_dataset, digit_split
from common.training import atomic_torch_save
from p3_dann.config import Config


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
