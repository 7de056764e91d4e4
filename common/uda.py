"""Adaptation accuracy: a prediction csv against the ground-truth csv (both ``image_name,label``).

Every ground-truth image counts: one without a prediction is an error (listed in
``missing_in_pred``); predictions for images not in the ground truth are listed in
``extra_in_pred`` (they do not change the accuracy). A name given twice in a csv is an error.

API::

    uda_accuracy(pred_csv, gt_csv) -> UDAResult(accuracy, correct, n, missing_in_pred, extra_in_pred)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from common.data import read_label_csv
from common.errors import DataError


@dataclass
class UDAResult:
    accuracy: float                     # correct / n (n = ground-truth rows)
    correct: int
    n: int
    missing_in_pred: list[str] = field(default_factory=list)
    extra_in_pred: list[str] = field(default_factory=list)


def _read(path: str | os.PathLike) -> dict[str, int]:
    names, labels = read_label_csv(path)
    out: dict[str, int] = {}
    for i, (n, y) in enumerate(zip(names, labels)):
        if n in out:
            raise DataError(f"{path}, line {i + 2}: image {n!r} appears twice")
        out[n] = y
    return out


def uda_accuracy(pred_csv: str | os.PathLike, gt_csv: str | os.PathLike) -> UDAResult:
    """Fraction of ground-truth images whose predicted label is right (missing = wrong)."""
    pred, gt = _read(pred_csv), _read(gt_csv)
    correct = sum(pred.get(n) == y for n, y in gt.items())
    missing = sorted(n for n in gt if n not in pred)
    extra = sorted(n for n in pred if n not in gt)
    return UDAResult(correct / len(gt), correct, len(gt), missing, extra)
