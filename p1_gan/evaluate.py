"""Problem 1 evaluation during training: FID of a fixed-seed batch of the EMA generator's faces
against face/val (the report's full numbers come from scripts/p1_eval_snapshots.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from common.gan import generate


def make_fid_eval(val_dir: Path, n: int, z_dim: int, device: torch.device):
    """eval_fn(G_eval, step) -> {"fid"}: FID of n images (fixed seed) vs val_dir (cached statistics)."""
    from common.fid import fid_of_images

    def eval_fn(G_eval, step):
        x = generate(G_eval, n, z_dim, seed=1, device=device)
        return {"fid": fid_of_images(x, val_dir, device=device, fast=True)}  # eigh trace: seconds, ~1e-5 rel.
    return eval_fn
