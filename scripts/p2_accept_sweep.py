"""Which ``--accept-prob`` for a GAN's candidates? Accuracy (and optionally FID) at several thresholds
from one draw of K candidates per image, exactly the candidates ``hw2_2.sh`` would draw (seed 0).

    python scripts/p2_accept_sweep.py checkpoints/p2_sagan.pt --candidates 8
    python scripts/p2_accept_sweep.py checkpoints/p2_acgan.pt --candidates 8 --accept-probs 0.9999 0.99999 --fid

``--candidates K`` draws K noises per image; for each threshold P, D's class head keeps the first
candidate with p(y | x) >= P, else the most probable (P = 1: always the most probable), as in
``python -m p2_diffusion_acgan.inference``. The course classifier only scores the result (overall,
worst digit); ``mean index`` is how far into the K candidates the pick lies on average (0: the
plain G). ``--fid`` adds FID vs mnistm val per threshold (pytorch-fid convention; ~2-4 min each on
this CPU). One table, and ``--out FILE`` appends one JSON line per threshold.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from common.cli import add_deprecated
from common.errors import UserError, cli_main


def sweep(checkpoint: str | Path, k: int, probs: Sequence[float], seed: int = 0, batch_size: int = 250,
          classifier=None, fid_ref=None, truncation: float | None = None) -> list[dict]:
    """One record per threshold: accept_prob, accuracy, worst_digit(_acc), mean_index (and fid when
    ``fid_ref`` is FID statistics to compare with)."""
    import torch
    from tqdm import tqdm

    from common import fid
    from common.training import load_checkpoint
    from p2_diffusion_acgan.evaluate import classifier_accuracy
    from p2_diffusion_acgan.inference import Generator, check_gan_options, digit_labels_and_names, pick_candidates
    from p2_diffusion_acgan.schedulers import per_image_generators
    for p in probs:
        check_gan_options(1.0, k, p)
    gen = Generator(load_checkpoint(checkpoint, "a shipped GAN checkpoint"), torch.device("cpu"))
    if gen.kind == "p2_diffusion":
        raise UserError(f"{checkpoint} is a diffusion model: accept thresholds are for GAN candidates")
    psi = gen.gan_options(truncation, k, 1.0)[0]
    y, _ = digit_labels_and_names()
    gens = per_image_generators(seed, len(y))
    xs, scores = [], []
    for s in tqdm(range(0, len(y), batch_size), desc=f"{k} candidates per image", leave=False):
        x, sc = gen.draw_candidates(y[s:s + batch_size], gens[s:s + batch_size], k, psi)
        xs.append(x.cpu())
        scores.append(sc.cpu() if sc is not None else torch.zeros(1, x.shape[1]))
    X, S = torch.cat(xs, 1), torch.cat(scores, 1)
    rows = []
    for p in probs:
        idx = pick_candidates(S, p)  # K = 1: the zero scores pick candidate 0, the plain G
        images = X[idx, torch.arange(len(y))]
        r = classifier_accuracy(images, y, classifier)
        row = {"checkpoint": str(checkpoint), "candidates": k, "accept_prob": p, "accuracy": r["accuracy"],
               "worst_digit": r["worst_digit"], "worst_digit_acc": r["worst_digit_acc"],
               "mean_index": round(idx.float().mean().item(), 3)}
        if fid_ref is not None:
            row["fid"] = fid.frechet_distance(fid.compute_statistics(images, progress=True), fid_ref)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/p2_accept_sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a GAN checkpoint that keeps D (checkpoints/p2_acgan.pt, p2_sagan.pt)")
    p.add_argument("--candidates", type=int, default=8, metavar="K", help="noises per image (default 8)")
    p.add_argument("--accept-probs", type=float, nargs="+", default=[0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0],
                   metavar="P", help="thresholds (default 0.5 ... 0.99999 and 1)")
    p.add_argument("--fid", action="store_true", help="also FID vs mnistm val per threshold")
    p.add_argument("--data", dest="data_root", default="hw2_data", help="with --fid: holds digits/mnistm (val is the reference) (default: hw2_data)")
    add_deprecated(p, "--data-root", "--data", "data_root")
    p.add_argument("--classifier", default=None, help="course Classifier.pth (default ../shared/evaluators/)")
    p.add_argument("--out", default=None, help="append one JSON line per threshold to this file")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    a = p.parse_args(argv)
    if not Path(a.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {a.checkpoint}")
    if a.threads > 0:
        import torch
        torch.set_num_threads(a.threads)
    ref = None
    if a.fid:
        if not (Path(a.data_root) / "digits" / "mnistm").is_dir():
            raise UserError(f"mnistm data not found: {Path(a.data_root) / 'digits' / 'mnistm'} (run: bash hw2_download.sh)")
        from p2_diffusion_acgan.evaluate import mnistm_val_stats
        ref = mnistm_val_stats(a.data_root)
    rows = sweep(a.checkpoint, a.candidates, a.accept_probs, classifier=a.classifier, fid_ref=ref)
    print(f"{a.checkpoint}, K = {a.candidates} (course classifier on hw2_2.sh's 1000 digits, seed 0)")
    print(f"{'accept P':>9} | {'accuracy':>8} | {'worst digit':>11} | {'mean index':>10}" + (" | FID" if a.fid else ""))
    for r in rows:
        print(f"{r['accept_prob']:>9g} | {100 * r['accuracy']:7.1f}% | {r['worst_digit']:>4}: {100 * r['worst_digit_acc']:4.0f}% "
              f"| {r['mean_index']:>10.2f}" + (f" | {r['fid']:.2f}" if a.fid else ""))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    cli_main(main)
