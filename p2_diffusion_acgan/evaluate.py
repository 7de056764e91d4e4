"""Problem-2 evaluation: course-classifier accuracy (overall, per digit) and FID against mnistm val.

The classifier is used for evaluation only, never as a training signal. Hooks for train.py
(``diffusion_eval_fn``, ``gan_eval_fn``) generate ``EVAL_PER_DIGIT`` images per digit with fixed
per-image seeds and return ``{"accuracy", "worst_digit_acc"}``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from p2_diffusion_acgan.schedulers import per_image_generators, randn

EVAL_PER_DIGIT = 100


def classifier_accuracy(images: torch.Tensor, labels: torch.Tensor, classifier=None) -> dict:
    """{"accuracy", "worst_digit_acc", "worst_digit", "per_digit"} of the course LeNet on images in [-1, 1]."""
    from common.digit_classifier import accuracy_of_images
    r = accuracy_of_images(images, labels.numpy(), classifier)
    worst = min(r.per_digit, key=r.per_digit.get)
    return {"accuracy": r.accuracy, "worst_digit_acc": r.per_digit[worst], "worst_digit": worst,
            "per_digit": {str(k): v for k, v in r.per_digit.items()}}


def mnistm_val_stats(data_root: str = "hw2_data", domain: str = "mnistm", dims: int | None = None,
                     device=None):
    """FID statistics of the mnistm val split (computed once, then cached by ``common.fid``)."""
    import tempfile

    from common import fid
    with tempfile.TemporaryDirectory(prefix="p2_ref_") as tmp:
        ref = fid.digit_split_folder(data_root, domain, "val", Path(tmp))
        return fid.reference_statistics(ref, device=device, dims=dims or fid.DIMS)


def fid_vs_val(images: torch.Tensor, data_root: str = "hw2_data", fast: bool = False) -> float:
    """FID of generated images (N, 3, 28, 28) in [-1, 1] against mnistm val (pytorch-fid convention)."""
    from common import fid
    return fid.frechet_distance(fid.compute_statistics(images, progress=True), mnistm_val_stats(data_root), fast=fast)


def _eval_labels() -> torch.Tensor:
    return torch.arange(10).repeat_interleave(EVAL_PER_DIGIT)


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float))}


def diffusion_eval_fn(model: nn.Module, cfg) -> dict:
    """Accuracy of 1000 EMA samples with the config's sampler/steps/guidance (train.py hook)."""
    from p2_diffusion_acgan.diffusion import sample
    from p2_diffusion_acgan.schedulers import NoiseSchedule, make_sampler
    y = _eval_labels()
    smp = make_sampler(cfg.sampler, NoiseSchedule(cfg.timesteps, cfg.schedule), cfg.spacing)
    x = sample(model, smp, y, cfg.guidance, cfg.sample_steps, per_image_generators(0, len(y)),
               guidance_interval=tuple(cfg.guidance_interval), precision=cfg.sample_precision).cpu()
    model.train()
    return _scalars(classifier_accuracy(x, y))


@torch.no_grad()
def gan_eval_fn(G: nn.Module, step: int) -> dict:
    """Accuracy of 1000 samples of G (eval mode) with fixed per-image noise (common.gan eval hook)."""
    y = _eval_labels()
    dev = next(G.parameters()).device
    z = randn((len(y), G.z_dim), per_image_generators(0, len(y)), dev)
    x = torch.cat([G(z[i:i + 500], y[i:i + 500].to(dev)).float().cpu() for i in range(0, len(y), 500)])
    return _scalars(classifier_accuracy(x, y))


def main(argv=None) -> int:
    """``python -m p2_diffusion_acgan.evaluate OUT``: accuracy (overall, per digit) and FID vs mnistm val
    of the images hw2_2.sh wrote to OUT (labels from the file names)."""
    import json

    from common.cli import add_deprecated, command_parser
    from common.digit_classifier import accuracy_of_folder
    p = command_parser("python -m p2_diffusion_acgan.evaluate", main.__doc__,
                       "python -m p2_diffusion_acgan.evaluate out/p2_digits",
                       "python -m p2_diffusion_acgan.evaluate out/p2_digits --no-fid --json")
    p.add_argument("folder", help="images named <digit>_<nnn>.png, as hw2_2.sh writes them")
    p.add_argument("--data", dest="data_root", default="hw2_data",
                   help="data folder holding digits/mnistm (val is the FID reference; default: hw2_data)")
    add_deprecated(p, "--data-root", "--data", "data_root")
    p.add_argument("--classifier", default=None, help="course Classifier.pth (default ../shared/evaluators/)")
    p.add_argument("--no-fid", action="store_true", help="accuracy only")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)
    r = accuracy_of_folder(args.folder, args.classifier)
    worst = min(r.per_digit, key=r.per_digit.get)
    res = {"accuracy": r.accuracy, "worst_digit": worst, "worst_digit_acc": r.per_digit[worst],
           "per_digit": {str(k): v for k, v in r.per_digit.items()}, "n": r.n}
    if not args.no_fid:
        from common import fid
        res["fid_vs_val"] = fid.frechet_distance(fid.compute_statistics(args.folder, progress=True),
                                                 mnistm_val_stats(args.data_root))
    if args.json:
        print(json.dumps(res))
    else:
        print(f"accuracy {100 * r.accuracy:.2f} % on {r.n} images (worst digit {worst}: {100 * r.per_digit[worst]:.1f} %)")
        print("per digit: " + ", ".join(f"{k}: {100 * v:.1f}" for k, v in r.per_digit.items()))
        if "fid_vs_val" in res:
            print(f"FID vs mnistm val: {res['fid_vs_val']:.2f}")
    return 0


if __name__ == "__main__":
    from common.errors import cli_main
    cli_main(main)
