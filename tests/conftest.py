"""Shared fixtures: tiny synthetic data in the homework layouts (no ../shared needed)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = REPO / "hw2_data"


def make_digit_domain(root: Path, domain: str, n_train: int = 40, n_val: int = 20, channels: int = 3,
                      size: int = 28, seed: int = 0, ext: str = ".png") -> Path:
    """Write ``root/digits/<domain>/{data/, train.csv, val.csv}`` with class-dependent images.

    Class k is a bright square at a k-dependent position on a noisy, domain-tinted background,
    so a small network can learn it in a few steps.
    """
    rng = np.random.default_rng(seed)
    d = root / "digits" / domain
    (d / "data").mkdir(parents=True, exist_ok=True)
    tint = rng.uniform(0, 120, size=3)
    i = 0
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for _ in range(n):
            label = i % 10
            img = rng.normal(0, 20, size=(size, size, 3)) + tint
            r, c = divmod(label, 4)
            img[2 + 6 * r: 7 + 6 * r, 2 + 6 * c: 7 + 6 * c] = 255
            img = np.clip(img, 0, 255).astype(np.uint8)
            name = f"{i:05d}{ext}"
            im = Image.fromarray(img)
            (im.convert("L") if channels == 1 else im).save(d / "data" / name)
            rows.append((name, label))
            i += 1
        with open(d / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_name", "label"])
            w.writerows(rows)
    return d


def make_face_folder(folder: Path, n: int = 16, size: int = 64, seed: int = 0, ext: str = ".png") -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}{ext}")
    return folder


@pytest.fixture
def tiny_digits(tmp_path) -> Path:
    """``tmp/hw2_data`` with digits/mnistm (RGB), digits/usps (1 channel), digits/svhn (RGB)."""
    root = tmp_path / "hw2_data"
    make_digit_domain(root, "mnistm", seed=1)
    make_digit_domain(root, "usps", channels=1, seed=2)
    make_digit_domain(root, "svhn", seed=3)
    return root


@pytest.fixture
def tiny_faces(tmp_path) -> Path:
    root = tmp_path / "hw2_data" / "face"
    make_face_folder(root / "train", 32, ext=".jpg")
    make_face_folder(root / "val", 16, seed=1)
    return tmp_path / "hw2_data"


def needs_shared(*parts: str):
    """Skip unless ``../shared/<parts>`` exists (CI has no ../shared)."""
    p = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not p.exists(), reason=f"needs {p} (not present on CI)")


def needs_data(*parts: str):
    """Skip unless ``hw2_data/<parts>`` exists (run `bash hw2_download.sh` first)."""
    p = DATA.joinpath(*parts)
    return pytest.mark.skipif(not p.exists(), reason=f"needs {p} (run: bash hw2_download.sh)")
