"""Problem 2 data: the MNIST-M train split decoded once, and the labels of a class-per-row grid."""
from __future__ import annotations

import torch

from common.data import NUM_CLASSES, digit_dataset


def load_train_data(data_root: str, domain: str = "mnistm", max_images: int = 0,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the train split once: uint8 (N, 3, 28, 28) and int64 labels (N,)."""
    ds = digit_dataset(data_root, domain, "train", channels=3)
    if max_images > 0:
        ds.names, ds.labels = ds.names[:max_images], ds.labels[:max_images]
    return ds.load_all(progress=progress)


def grid_labels(n_per_class: int = 10, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Labels of a grid with one row per class: [0]*n, [1]*n, ... (int64)."""
    return torch.arange(num_classes).repeat_interleave(n_per_class)
