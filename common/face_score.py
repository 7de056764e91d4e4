"""Face score: percentage of images in which the HOG face detector finds exactly one face.

This is what ``face_recognition.face_locations(img, number_of_times_to_upsample=1, model="hog")``
does: ``dlib.get_frontal_face_detector()(img, 1)`` on the image loaded as an RGB uint8 array
(``face_recognition.load_image_file`` = PIL ``convert("RGB")``). dlib's detector scans an 80x80
window, so with one upsample (x2) a face must be about 40 px wide: a 64x64 face crop (CelebA) is
found, a whole 512x512 photo shrunk to 64x64 (face ~11 px) is not.

Unreadable files are left out of the denominator and listed in ``FaceScore.unreadable``.

API::

    face_score(folder)          -> FaceScore(percent, n_one_face, n, unreadable)
    face_score_of_images(x)     -> FaceScore     # x: (N,3,H,W) uint8 or float in [-1,1]
    count_faces(img)            -> int           # img: (H, W, 3) uint8 RGB
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.data import list_images
from common.errors import DataError, UserError

UPSAMPLE = 1  # face_recognition's default number_of_times_to_upsample


@dataclass
class FaceScore:
    percent: float          # 100 * n_one_face / n
    n_one_face: int
    n: int                  # readable images
    unreadable: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def _detector():
    try:
        import dlib
    except ImportError:
        raise UserError("the face score needs dlib: pip install dlib-bin") from None
    return dlib.get_frontal_face_detector()


def count_faces(img: np.ndarray, upsample: int = UPSAMPLE) -> int:
    """Number of faces dlib's HOG frontal detector finds in an RGB uint8 (H, W, 3) image."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return len(_detector()(img, upsample))


def _score(images: Iterable[np.ndarray | None], names: list[str], progress: bool) -> FaceScore:
    from tqdm import tqdm
    ones, n, bad = 0, 0, []
    for name, img in tqdm(zip(names, images), total=len(names), desc="face score", unit="img",
                          disable=not progress, leave=False):
        if img is None:
            bad.append(name)
            continue
        n += 1
        ones += count_faces(img) == 1
    if n == 0:
        raise DataError(f"no readable images ({len(bad)} unreadable, e.g. {bad[0] if bad else '-'})")
    return FaceScore(100.0 * ones / n, ones, n, bad)


def _load_rgb(path: Path) -> np.ndarray | None:
    """face_recognition.load_image_file(path): RGB uint8, or None when unreadable."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def face_score(folder: str | os.PathLike, progress: bool = False) -> FaceScore:
    """Face score of every image file in ``folder`` (sorted by name)."""
    folder = Path(folder)
    names = list_images(folder)
    return _score((_load_rgb(folder / n) for n in names), names, progress)


def face_score_of_images(images, progress: bool = False) -> FaceScore:
    """Face score of an in-memory batch (N,3,H,W) uint8, or float in [-1,1] (quantised like a PNG)."""
    from common.fid import as_uint8_batch
    x = as_uint8_batch(images).permute(0, 2, 3, 1).cpu().numpy()
    return _score(iter(x), [str(i) for i in range(len(x))], progress)
