"""The shipped-weights format, one for every problem.

A shipped checkpoint (``checkpoints/<name>.pt``, a run's ``model.pt``, an export or a snapshot) is a
self-describing dict loaded with ``torch.load(..., weights_only=True)``::

    {"version": 1, "kind": "p2_diffusion" (optional), "config": {...the run's config...},
     "model": {fp16 weights: the EMA generator / network inference uses}, "step": N,
     "D": {fp16 discriminator weights, GANs only, so that training can go on from the file}, ...}

and a JSON beside it (``<name>.json``) says how it was trained and what it reached. Inference rebuilds
the network from ``config`` alone. Run states (``last.pt``: weights, optimisers, RNG) are a different,
larger dict that only the trainers read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.errors import UserError
from common.training import (CHECKPOINT_VERSION, atomic_torch_save, atomic_write_json, float_state_dict,
                             half_state_dict, load_checkpoint)

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = REPO / "checkpoints"


def shipped_path(name: str, folder: str | Path = CHECKPOINT_DIR) -> Path:
    """``checkpoints/<name>.pt``: where the entry scripts look for a model's weights by default."""
    return Path(folder) / f"{name}.pt"


def shipped_form(config: dict, weights: dict[str, torch.Tensor], step: int, kind: str | None = None,
                 fp16: bool = True, **extra: Any) -> dict:
    """The inference-ready dict: version, (kind), config, weights (fp16 unless ``fp16`` is False), step."""
    return {"version": CHECKPOINT_VERSION, **({"kind": kind} if kind else {}), "config": config,
            "model": half_state_dict(weights) if fp16 else {k: v.detach().cpu() for k, v in weights.items()},
            "step": int(step), **extra}


def save_shipped(ck: dict, out: str | Path, info: dict) -> None:
    """Write ``ck`` atomically to ``out`` and ``info`` (how it was trained, what it reached) beside it."""
    atomic_torch_save(ck, out)
    atomic_write_json(Path(out).with_suffix(".json"), info)


def generator_state_dict(ckpt: dict) -> dict[str, torch.Tensor]:
    """Generator weights (fp32) from a shipped checkpoint (``model``) or a run's last/best.pt (EMA if any)."""
    if "model" in ckpt:
        sd = ckpt["model"]
    elif ckpt.get("ema") is not None:
        sd = ckpt["ema"]["module"]
    elif "G" in ckpt:
        sd = ckpt["G"]
    else:
        raise UserError("checkpoint holds no generator weights (expected key 'model', 'ema' or 'G')")
    return float_state_dict(sd)


def export_generator(run_ckpt: str | Path, out: str | Path, metrics: dict | None = None,
                     fp16: bool = True) -> dict:
    """Write the shipped form of a GAN run checkpoint: config + generator (EMA) weights (+ a JSON beside it)."""
    ck = load_checkpoint(run_ckpt, "a run folder's last.pt or best.pt")
    return export_state(ck, out, metrics, fp16, source=str(run_ckpt))


def export_state(ck: dict, out: str | Path, metrics: dict | None = None, fp16: bool = True,
                 source: str = "", include_d: bool = False) -> dict:
    """``export_generator`` for a checkpoint dict already in memory (also used for training snapshots).

    ``include_d`` also keeps D's weights (fp16 when ``fp16``), from which a later run goes on with
    ``init_from`` (a trained G with a fresh D does not learn)."""
    extra = {}
    if include_d and ck.get("D") is not None:
        extra["D"] = half_state_dict(ck["D"]) if fp16 else ck["D"]
    shipped = shipped_form(ck["config"], generator_state_dict(ck), int(ck.get("step", 0)), fp16=fp16,
                           metrics={**(ck.get("best") or {}), **(metrics or {})}, **extra)
    info = {k: shipped[k] for k in ("version", "config", "step", "metrics")}
    save_shipped(shipped, out, {**info, "source": source, "weights": "fp16" if fp16 else "fp32",
                                "ema": ck.get("ema") is not None, "has_D": "D" in extra})
    return info
