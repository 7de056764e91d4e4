"""Digit accuracy with the course's pretrained LeNet (evaluation only: never train against it).

LeNet (SPEC.md): Conv(3,6,5)-ReLU-MaxPool2-Conv(6,16,5)-ReLU-MaxPool2-FC(256,128)-ReLU-FC(128,64)-
ReLU-FC(64,10), on 28x28 RGB normalised with mean 0.5 / std 0.5 (i.e. [-1, 1]). The checkpoint is a
dict whose ``state_dict`` holds ``conv1, conv2, fc1, fc2, fc3``. An image's label is the first
character of its file name (``{digit}_{idx:03d}.png``); images of another size are resized to 28x28
(bilinear). Runs on the CPU.

API::

    load_classifier(path=None)                  -> LeNet   # default DEFAULT_CLASSIFIER
    accuracy_of_folder(folder, classifier=None) -> DigitAccuracy(accuracy, per_digit, n)
    accuracy_of_images(x, labels, classifier=None) -> DigitAccuracy
        # x: (N,3,28,28) uint8 or float in [-1,1]; labels: (N,) ints; classifier: LeNet or path
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import list_images, load_image, to_float, to_uint8
from common.errors import DataError, UserError
from common.training import first_line, load_checkpoint

DEFAULT_CLASSIFIER = Path(__file__).resolve().parents[1].parent / "shared" / "evaluators" / "Classifier.pth"


class LeNet(nn.Module):
    """(N, 3, 28, 28) in [-1, 1] -> logits (N, 10); parameter names match Classifier.pth."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)      # 28 -> 24 -> pool 12
        self.conv2 = nn.Conv2d(6, 16, 5)     # 12 -> 8 -> pool 4
        self.fc1 = nn.Linear(16 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)                     # (N, 256)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def load_classifier(path: str | os.PathLike | None = None) -> LeNet:
    """LeNet from a checkpoint dict with ``state_dict`` (default: $HW2_CLASSIFIER, else
    ../shared/evaluators/Classifier.pth)."""
    if path is None:
        path = Path(os.environ.get("HW2_CLASSIFIER") or DEFAULT_CLASSIFIER)
        if not path.is_file():
            raise UserError(f"digit classifier not found at {path}: pass --classifier PATH "
                            f"(the course's Classifier.pth)")
    ckpt = load_checkpoint(path, "the digit classifier, a dict with 'state_dict'")
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise UserError(f"{path}: not a classifier checkpoint (needs a dict with key 'state_dict')")
    model = LeNet()
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise UserError(f"{path}: state_dict does not fit the LeNet of SPEC.md: {first_line(e)}") from None
    return model.eval()


@dataclass
class DigitAccuracy:
    accuracy: float                      # fraction correct
    per_digit: dict[int, float]          # digit -> fraction correct (digits present only)
    n: int
    counts: dict[int, int]               # digit -> number of images
    unreadable: list[str] = field(default_factory=list)  # files left out (as the face score does)


def _as_model(classifier) -> LeNet:
    return classifier if isinstance(classifier, nn.Module) else load_classifier(classifier)


@torch.no_grad()
def predict(classifier: nn.Module, images, batch_size: int = 500) -> np.ndarray:
    """Predicted digits (N,) for (N,3,28,28) uint8 or float in [-1,1] (quantised like a saved PNG)."""
    x = torch.as_tensor(images)
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"expected images (N, 3, 28, 28), got shape {tuple(x.shape)}")
    x = to_float(x if x.dtype == torch.uint8 else to_uint8(x)).cpu()
    return np.concatenate([classifier(x[i:i + batch_size]).argmax(1).numpy()
                           for i in range(0, len(x), batch_size)])


def _summarise(pred: np.ndarray, labels: np.ndarray) -> DigitAccuracy:
    ok = pred == labels
    digits = sorted(set(labels.tolist()))
    per = {d: float(ok[labels == d].mean()) for d in digits}
    counts = {d: int((labels == d).sum()) for d in digits}
    return DigitAccuracy(float(ok.mean()), per, len(labels), counts)


def accuracy_of_images(images, labels, classifier=None) -> DigitAccuracy:
    """Accuracy of the classifier (a LeNet, a checkpoint path, or None = default) on a batch."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images) or len(labels) == 0:
        raise UserError(f"need one label per image, got {len(labels)} labels for {len(images)} images")
    return _summarise(predict(_as_model(classifier), images), labels)


def label_from_name(name: str) -> int:
    """``"3_017.png" -> 3`` (the first character of the file name)."""
    if not name[:1].isdigit():
        raise DataError(f"file name {name!r} does not start with its digit label (expected e.g. 3_017.png)")
    return int(name[0])


def accuracy_of_folder(folder: str | os.PathLike, classifier=None, progress: bool = False) -> DigitAccuracy:
    """Accuracy on every image of ``folder``, labelled by the first character of its name."""
    from tqdm import tqdm
    folder = Path(folder)
    names = list_images(folder)
    labels = np.array([label_from_name(n) for n in names])
    model = _as_model(classifier)
    imgs, keep, bad = [], [], []
    for i, n in enumerate(tqdm(names, desc="digits", unit="img", disable=not progress, leave=False)):
        try:
            imgs.append(load_image(folder / n, channels=3, size=28))
            keep.append(i)
        except DataError:
            bad.append(n)
    if not imgs:
        raise DataError(f"no readable images in {folder} ({len(bad)} unreadable, e.g. {bad[0] if bad else '-'})")
    result = _summarise(predict(model, torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)), labels[keep])
    result.unreadable = bad
    return result
