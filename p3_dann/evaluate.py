"""Problem 3 evaluation: logits / features of uint8 images, accuracy, and loading a trained model
from its checkpoint's config alone."""
from __future__ import annotations

from pathlib import Path

import torch

from common.cli import config_from_dict
from common.data import to_float
from common.errors import UserError
from common.training import first_line, load_checkpoint
from p3_dann.config import Config, build_model
from p3_dann.model import DANN


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512,
            features: bool = False) -> torch.Tensor:
    """Logits (N, 10) -- or features (N, D) -- of uint8 (N, 3, H, W) images, in eval mode, on CPU."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i:i + batch_size].to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append((model.features(xb) if features else model(xb)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    return (predict(model, x, device).argmax(1) == y).float().mean().item()


def load_model(path: str | Path, device: torch.device | None = None) -> tuple[DANN, Config]:
    """Rebuild a model from a final/exported checkpoint's config alone (fp16 weights become fp32)."""
    ck = load_checkpoint(path, "train one with python -m p3_dann.train")
    conf = ck.get("config")
    if "model" not in ck or not isinstance(conf, dict) or not {"source", "target", "mode"} <= set(conf):
        what = f" (a {ck['kind']} checkpoint)" if "kind" in ck else ""
        raise UserError(f"{path} is not a p3_dann checkpoint{what}: it needs 'model' and a config with source, target, mode")
    cfg = config_from_dict(Config, conf)
    model = build_model(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    except (RuntimeError, AttributeError) as e:
        raise UserError(f"{path}: weights do not fit its config ({first_line(e, 150)})") from None
    return model.to(device or torch.device("cpu")).eval(), cfg
