"""Datasets for the homework layouts (see SPEC.md).

Both layouts are "an image folder plus an optional csv":

    face/train/                      -> ImageFolder("face/train")
    digits/usps/data + val.csv       -> ImageFolder("digits/usps/data", "digits/usps/val.csv")
    digits/usps/test + test.csv      -> (older variant) same call with other paths

Images come out as float tensors in [-1, 1] with ``channels`` channels (USPS's single channel is
repeated to RGB when ``channels=3``). Labels are int64 (``-1`` when there is no csv).

For training on small images it is much faster to decode everything once
(``ImageFolder.load_all``) and sample batches from the tensor (``TensorBatches``) than to go
through a DataLoader; both paths are here.
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from common.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
NUM_CLASSES = 10


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def existing_folder(folder: str | os.PathLike, what: str = "a folder") -> Path:
    """``folder`` as a Path; a one-line ``DataError`` when it is missing or not a folder."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise DataError(f"not {what}: {folder}")
    return folder


def list_images(folder: str | os.PathLike) -> list[str]:
    """Sorted image file names (not paths) in ``folder``; one-line errors for a bad folder."""
    folder = existing_folder(folder)
    names = sorted(n for n in os.listdir(folder) if is_image_file(n))
    if not names:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder: {folder}")
    return names


def read_label_csv(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """Read an ``image_name,label`` csv; labels must be integers 0-9."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"csv file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is fine
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [c.strip() for c in (reader.fieldnames or [])]
    if "image_name" not in fields or "label" not in fields:
        raise DataError(f"{path}: needs columns image_name,label (found: {','.join(fields) or 'nothing'})")
    reader.fieldnames = fields
    names, labels = [], []
    for row_no, row in enumerate(reader, start=2):  # line 1 is the header
        name, raw = (row.get("image_name") or "").strip(), (row.get("label") or "").strip()
        if not name:
            raise DataError(f"{path}, line {row_no}: empty image_name")
        if name != Path(name).name or name in (".", ".."):  # a bare file name: nothing outside the folder
            raise DataError(f"{path}, line {row_no}: image_name {name!r} must be a file name, not a path")
        try:
            label = int(raw)
        except ValueError:
            raise DataError(f"{path}, line {row_no}: label {raw!r} is not an integer") from None
        if not 0 <= label < NUM_CLASSES:
            raise DataError(f"{path}, line {row_no}: label {label} outside 0-{NUM_CLASSES - 1}")
        names.append(name)
        labels.append(label)
    if not names:
        raise DataError(f"{path}: no rows")
    return names, labels


def load_image(path: str | os.PathLike, channels: int = 3, size: int | None = None) -> np.ndarray:
    """Decode one image to a uint8 array (H, W, C); ``size`` resizes to size x size."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"unreadable image: {path} ({type(e).__name__})") from None
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ImageFolder(Dataset):
    """Images of a folder, labelled by an optional ``image_name,label`` csv.

    ``__getitem__`` returns ``(x, y)``: x float (channels, H, W) in [-1, 1]; y int64 (-1 without
    csv). Without a csv every image file of the folder is used, sorted by name.
    """

    def __init__(self, root: str | os.PathLike, csv_path: str | os.PathLike | None = None,
                 channels: int = 3, size: int | None = None):
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        self.root, self.channels, self.size = Path(root), channels, size
        if csv_path is None:
            self.names = list_images(self.root)
            self.labels = [-1] * len(self.names)
        else:
            if not self.root.is_dir():
                raise DataError(f"image folder not found: {self.root}")
            self.names, self.labels = read_label_csv(csv_path)
            for i, n in enumerate(self.names):
                if not (self.root / n).is_file():
                    raise DataError(f"{csv_path}, line {i + 2}: image not found: {self.root / n}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        arr = load_image(self.root / self.names[i], self.channels, self.size)
        return to_float(torch.from_numpy(arr).permute(2, 0, 1)), self.labels[i]

    def load_all(self, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every image once: uint8 (N, C, H, W) and int64 labels (N,).

        All images must have the same size (pass ``size`` otherwise).
        """
        from tqdm import tqdm

        arrays = [load_image(self.root / n, self.channels, self.size)
                  for n in tqdm(self.names, desc=f"loading {self.root}", disable=not progress,
                                leave=False, mininterval=1.0)]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"images of different sizes in {self.root}: {sorted(shapes)[:3]}; pass size=")
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(self.labels, dtype=torch.int64)


@dataclass
class DigitSplit:
    """Where one split of a digit domain lives in either layout."""

    images: Path
    csv: Path


def digit_split(data_root: str | os.PathLike, domain: str, split: str) -> DigitSplit:
    """Locate ``digits/<domain>`` split ``train``/``val``/``test`` in the current or older layout.

    Current layout: ``<domain>/data`` + ``<domain>/<split>.csv``. Older: ``<domain>/<split>/`` +
    ``<domain>/<split>.csv``. ``data_root`` may be ``hw2_data`` or ``hw2_data/digits``.
    """
    root = Path(data_root)
    if (root / "digits").is_dir():
        root = root / "digits"
    d = root / domain
    if not d.is_dir():
        raise DataError(f"digit domain folder not found: {d}")
    csv_path = d / f"{split}.csv"
    if not csv_path.is_file():
        raise DataError(f"csv file not found: {csv_path}")
    images = d / split if (d / split).is_dir() else d / "data"
    return DigitSplit(images, csv_path)


def digit_dataset(data_root: str | os.PathLike, domain: str, split: str, channels: int = 3) -> ImageFolder:
    s = digit_split(data_root, domain, split)
    return ImageFolder(s.images, s.csv, channels=channels)


class TensorBatches:
    """Endless shuffled batches from in-memory tensors: yields tuples of slices.

    Every epoch is a fresh permutation from ``generator`` (so runs are reproducible);
    ``drop_last`` keeps batch shapes constant. ``state_dict()`` / ``load_state_dict()`` keep the place
    in the current epoch and the generator's state, so that a resumed run sees the batches (and
    whatever else draws from the same generator) an uninterrupted one would.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                 drop_last: bool = True):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors need the same length")
        if n < batch_size and drop_last:
            raise DataError(f"dataset of {n} images is smaller than batch size {batch_size}")
        self.tensors, self.batch_size, self.drop_last = tensors, batch_size, drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.epoch = 0
        self._epoch_start, self._pos, self._resume = None, 0, None

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict:
        """Where the iteration stands: the generator state the current epoch's permutation was drawn
        from, and how many of its batches were handed out."""
        now = self.generator.get_state()
        start = self._epoch_start if self._epoch_start is not None else now
        return {"epoch_start": start, "pos": self._pos, "epoch": self.epoch, "generator": now}

    def load_state_dict(self, sd: dict) -> None:
        """Resume at the saved place; the generator gets its saved state back too, so another user of
        the same generator (augmentations, a second TensorBatches) also goes on where it was."""
        self.generator.set_state(sd["epoch_start"])  # the saved epoch's permutation, drawn again now
        perm = torch.randperm(len(self.tensors[0]), generator=self.generator)
        if sd.get("generator") is not None:
            self.generator.set_state(sd["generator"])
        self._resume, self.epoch = (perm, int(sd["pos"]), sd["epoch_start"]), int(sd["epoch"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            start = 0
            if self._resume is not None:  # the saved epoch's permutation, from its next batch on
                perm, start, self._epoch_start = self._resume
                self._resume = None
            else:
                self._epoch_start = self.generator.get_state()
                perm = torch.randperm(len(self.tensors[0]), generator=self.generator)
            for i in range(start, len(self)):
                self._pos = i + 1
                idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
            self.epoch, self._pos = self.epoch + 1, 0


def save_png(x: torch.Tensor, path: str | os.PathLike) -> None:
    """Save one float image (C, H, W) in [-1, 1] as an RGB (or L) PNG."""
    arr = to_uint8(x).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)


def save_pngs(x: torch.Tensor, names: Sequence[str], out_dir: str | os.PathLike) -> None:
    """Save a batch of float images (N, C, H, W) in [-1, 1] as PNGs named ``names`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for img, name in zip(x, names):
        save_png(img, out_dir / name)


def check_output_dir(out: str | os.PathLike) -> Path:
    """An output folder the entry scripts may (re)write, checked before any work: not a file, in a
    writable place, and holding nothing but images of an earlier run (those are replaced whole)."""
    from common.errors import UserError
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} is an existing file; give a folder")
    if out.is_dir():
        others = sorted(n for n in os.listdir(out) if not is_image_file(n))
        if others:
            raise UserError(f"output folder {out} holds files that are not images ({', '.join(others[:3])}"
                            f"{', ...' if len(others) > 3 else ''}); give a new or empty folder")
    check_writable_place(out, "the output folder")
    return out


def check_writable_place(path: str | os.PathLike, what: str) -> None:
    """``path`` (which need not exist yet) can be created: its nearest existing parent is a
    writable folder. A one-line ``UserError`` naming ``what`` otherwise."""
    from common.errors import UserError
    parent = Path(path).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {path}: {parent} is not writable (or not a folder)")


@contextlib.contextmanager
def staged_output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Write the outputs into a hidden staging folder beside ``out`` and move it into place at the end:
    a run that fails or is killed leaves the earlier output (or none), never a partial or mixed one."""
    import shutil
    import tempfile

    from common.training import umask_mode
    out = check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    umask_mode(stage, folder=True)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)



def save_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> None:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid (``nrow`` images per row)."""
    from torchvision.utils import save_image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(x.float().cpu().clamp(-1, 1), str(path), nrow=nrow, normalize=True, value_range=(-1, 1))
