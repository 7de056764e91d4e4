"""Problem 1 data: the training faces decoded once to one uint8 tensor (cached), and where the face
folder of a data folder is."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from common.data import ImageFolder, list_images
from common.errors import DataError
from common.training import atomic_torch_save


def load_faces(train_dir: Path, limit: int | None = None, cache_dir: Path | None = None) -> torch.Tensor:
    """All training faces as uint8 (N, 3, 64, 64); the full set is cached once in ``cache_dir``."""
    names = list_images(train_dir)
    if not names:
        raise DataError(f"no images in {train_dir}")
    if limit is not None:
        ds = ImageFolder(train_dir, size=64)
        ds.names, ds.labels = ds.names[:limit], ds.labels[:limit]
        return ds.load_all(progress=False)[0]
    key = hashlib.sha1("".join(f"{n}:{os.path.getsize(train_dir / n)}\n" for n in names).encode()).hexdigest()[:16]
    cache = cache_dir / f"faces_{len(names)}_{key}.pt" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:
            pass  # broken cache: rebuild
    x = ImageFolder(train_dir, size=64).load_all()[0]
    if cache is not None:
        atomic_torch_save(x, cache)
    return x


def face_folder(data: str | Path) -> Path:
    """The face folder (holding train/ and val/): ``data/face`` of a hw2_data folder, or ``data`` itself."""
    data = Path(data)
    return data / "face" if (data / "face" / "train").is_dir() or not (data / "train").is_dir() else data
