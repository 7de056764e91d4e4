"""Inception Score (Salimans et al. 2016) with torchvision's Inception-v3 (ImageNet weights).

IS = exp( E_x KL(p(y|x) || p(y)) ), computed on each of ``splits`` (10) consecutive parts of the
images; the score is the mean over parts and ``is_std`` their standard deviation. This follows the
widely used PyTorch port (sbarratt/inception-score-pytorch) the course uses: images in [-1, 1],
bilinear resize to 299x299, ``inception_v3`` with ``transform_input=False``, softmax over the
1000 ImageNet classes.

API::

    inception_score(src, splits=10)         -> (is_mean, is_std)   # folder or (N,3,H,W) batch
    inception_score_from_probs(p, splits)   -> (is_mean, is_std)   # p: (N, classes) softmax rows
    imagenet_inception(device)              -> nn.Module           # raises UserError without weights

The weights cannot be downloaded here: put ``inception_v3_google-0cc3c7bd.pth`` in
``torch.hub.get_dir()/checkpoints`` (``is_weights_path()`` says where).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import rel_entr

from common.errors import UserError
from common.fid import _device, image_batches

IS_WEIGHTS_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"


def is_weights_path() -> Path:
    """Where torchvision looks for its Inception-v3 ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IS_WEIGHTS_URL.rsplit("/", 1)[-1]


def imagenet_inception(device: str | torch.device | None = None) -> torch.nn.Module:
    """torchvision Inception-v3 with ImageNet weights, eval mode, expecting input in [-1, 1]."""
    import torchvision
    path = is_weights_path()
    if not path.is_file():
        raise UserError(f"Inception-v3 ImageNet weights not found: download {IS_WEIGHTS_URL} "
                        f"and put it at {path}")
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                            init_weights=False)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:
        raise UserError(f"cannot load Inception-v3 weights {path}: {type(e).__name__}: {str(e)[:150]}") from None
    return model.eval().to(_device(device))


def inception_score_from_probs(p: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS mean and std over ``splits`` consecutive parts of the class probabilities ``p`` (N, K)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or len(p) < splits or splits < 1:
        raise UserError(f"Inception Score needs at least {splits} images (one per split), got {len(p)}")
    n = len(p) // splits
    scores = []
    for k in range(splits):
        part = p[k * n:(k + 1) * n]
        py = part.mean(axis=0, keepdims=True)
        kl = rel_entr(part, py).sum(axis=1)  # KL(p(y|x) || p(y)), 0 log 0 = 0
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


@torch.no_grad()
def class_probabilities(src, classifier: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        batch_size: int = 50, device: str | torch.device | None = None,
                        progress: bool = False) -> np.ndarray:
    """Softmax (N, K) of ``classifier`` on images resized to 299x299 in [-1, 1].

    ``src``: image folder or in-memory batch (uint8, or float in [-1, 1]); ``classifier`` maps
    (B, 3, 299, 299) to logits; default: ``imagenet_inception(device)``.
    """
    from tqdm import tqdm
    n, batches = image_batches(src, batch_size)
    dev = _device(device)
    model = classifier if classifier is not None else imagenet_inception(dev)
    out = []
    with tqdm(total=n, desc="Inception Score", unit="img", disable=not progress, leave=False) as bar:
        for b in batches:
            x = b.to(dev).float().div_(127.5).sub_(1.0)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(F.softmax(model(x).float(), dim=1).cpu().numpy())
            bar.update(len(b))
    return np.concatenate(out)


def inception_score(src, splits: int = 10, batch_size: int = 50, device: str | torch.device | None = None,
                    classifier: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    progress: bool = False) -> tuple[float, float]:
    """(IS mean, IS std) of an image folder or an in-memory batch; see the module docstring."""
    if isinstance(src, (str, os.PathLike)) and not Path(src).is_dir():
        raise UserError(f"image folder not found: {src}")
    return inception_score_from_probs(class_probabilities(src, classifier, batch_size, device, progress), splits)
