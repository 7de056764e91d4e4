"""One CLI for every metric of the homework.

    python -m common.evaluate fid GEN REF        # == python -m pytorch_fid GEN REF (REF stats cached)
    python -m common.evaluate fid GEN hw2_data/digits/mnistm/val.csv   # REF: the images a csv lists
    python -m common.evaluate is GEN             # Inception Score, 10 splits
    python -m common.evaluate face GEN           # % of images with exactly one HOG face
    python -m common.evaluate digits GEN         # LeNet accuracy, label = first char of file name
    python -m common.evaluate uda PRED_CSV GT_CSV

Readable text by default; with ``--json`` exactly one JSON object on stdout, holding the metric under
its own name: ``{"fid"}``, ``{"is", "is_std"}``, ``{"face"}`` (percent), ``{"digits", "per_digit"}``,
``{"uda"}`` (fractions), plus counts. Progress bars go to stderr.
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Sequence

from common.errors import UserError, cli_main


def split_reference(csv_path: Path, dest: Path) -> Path:
    """The images a digit split's csv (``digits/<d>/<split>.csv``) lists, as a plain folder of hard
    links (``common.fid.digit_split_folder``)."""
    from common import fid
    csv_path = Path(csv_path)
    return fid.digit_split_folder(csv_path.parent.parent, csv_path.parent.name, csv_path.stem, dest)


def _fid(a) -> dict:
    import tempfile

    from common import fid
    with tempfile.TemporaryDirectory(prefix="fid_ref_") as tmp:
        ref = split_reference(a.ref, Path(tmp)) if str(a.ref).endswith(".csv") else a.ref
        n_gen, n_ref = (len(fid.fid_image_files(p)) if not str(p).endswith(".npz") else None for p in (a.gen, ref))
        value = fid.fid_from_folders(a.gen, ref, batch_size=a.batch_size, device=a.device,
                                     cache_ref=not a.no_cache, progress=True, dims=a.dims)
    return {"fid": value, "n_gen": n_gen, "n_ref": n_ref}


def _is(a) -> dict:
    from common.fid import fid_image_files
    from common.inception_score import inception_score
    mean, std = inception_score(a.gen, splits=a.splits, batch_size=a.batch_size, device=a.device, progress=True)
    return {"is": mean, "is_std": std, "n": len(fid_image_files(a.gen))}


def _face(a) -> dict:
    from common.face_score import face_score
    r = face_score(a.gen, progress=True)
    return {"face": r.percent, "n_one_face": r.n_one_face, "n": r.n, "unreadable": r.unreadable}


def _digits(a) -> dict:
    from common.digit_classifier import accuracy_of_folder
    r = accuracy_of_folder(a.gen, a.classifier, progress=True)
    return {"digits": r.accuracy, "per_digit": {str(d): v for d, v in r.per_digit.items()}, "n": r.n,
            "counts": {str(d): c for d, c in r.counts.items()}, "unreadable": r.unreadable}


def _uda(a) -> dict:
    from common.uda import uda_accuracy
    r = uda_accuracy(a.pred_csv, a.gt_csv)
    return {"uda": r.accuracy, "correct": r.correct, "n": r.n,
            "missing_in_pred": r.missing_in_pred, "extra_in_pred": r.extra_in_pred}


def _listing(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def format_result(cmd: str, r: dict) -> str:
    """Human-readable lines for one result dict."""
    if cmd == "fid":
        small = min(n for n in (r.get("n_gen"), r.get("n_ref")) if n is not None) if r.get("n_gen") or r.get("n_ref") else None
        note = (f"\nnote: only {small} images on one side: FID is biased at small sample sizes (it can even come out "
                "negative); compare FIDs of equal sizes, 1000+ images") if small is not None and small < 200 else ""
        return f"FID: {r['fid']:.4f}{note}"
    if cmd == "is":
        return f"Inception Score: {r['is']:.4f} +- {r['is_std']:.4f}  ({r['n']} images)"
    if cmd == "face":
        s = f"face score: {r['face']:.2f} %  ({r['n_one_face']} of {r['n']} images with exactly one face)"
        if r["unreadable"]:
            s += f"\nunreadable (left out): {_listing(r['unreadable'])}"
        return s
    if cmd == "digits":
        lines = [f"digit accuracy: {100 * r['digits']:.2f} %  ({r['n']} images)"]
        lines += [f"  {d}: {100 * v:6.2f} %  ({r['counts'][d]})" for d, v in r["per_digit"].items()]
        if r.get("unreadable"):
            lines.append(f"unreadable (left out): {_listing(r['unreadable'])}")
        return "\n".join(lines)
    s = f"adaptation accuracy: {100 * r['uda']:.2f} %  ({r['correct']} of {r['n']})"
    if r["missing_in_pred"]:
        s += f"\nmissing from the predictions (counted wrong): {_listing(r['missing_in_pred'])}"
    if r["extra_in_pred"]:
        s += f"\npredicted but not in the ground truth (ignored): {_listing(r['extra_in_pred'])}"
    return s


def build_parser() -> argparse.ArgumentParser:
    from common.cli import command_parser
    p = command_parser("python -m common.evaluate", __doc__,
                       "python -m common.evaluate fid out/p1_faces hw2_data/face/val",
                       "python -m common.evaluate fid out/p2_digits hw2_data/digits/mnistm/val.csv --json",
                       "python -m common.evaluate uda out/pred.csv hw2_data/digits/usps/val.csv")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        s.set_defaults(fn=fn)
        return s

    s = add("fid", _fid, "FID between two image folders (or .npz statistics), as pytorch-fid")
    s.add_argument("gen", type=Path, help="folder of generated images (or a .npz of statistics)")
    s.add_argument("ref", type=Path, help="reference folder, .npz statistics, or a split's csv "
                                          "(e.g. hw2_data/digits/mnistm/val.csv: the images it lists)")
    s.add_argument("--batch-size", type=int, default=50, help="images per Inception pass (default: 50, as pytorch-fid)")
    s.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    s.add_argument("--dims", type=int, default=2048, choices=[64, 192, 768, 2048],
                   help="Inception feature block, as pytorch-fid's --dims (FID: 2048)")
    s.add_argument("--no-cache", action="store_true", help="do not use/write cached REF statistics")
    s = add("is", _is, "Inception Score (torchvision Inception-v3, 10 splits)")
    s.add_argument("gen", type=Path, help="folder of images")
    s.add_argument("--splits", type=int, default=10, help="splits the score is averaged over (default: 10)")
    s.add_argument("--batch-size", type=int, default=50, help="images per Inception pass (default: 50)")
    s.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    s = add("face", _face, "percentage of images with exactly one HOG-detected face")
    s.add_argument("gen", type=Path, help="folder of images")
    s = add("digits", _digits, "digit classifier accuracy (label = first character of file name)")
    s.add_argument("gen", type=Path, help="folder of images named <digit>_<anything>.png")
    s.add_argument("--classifier", type=Path, default=None,
                   help="checkpoint with 'state_dict' (default: ../shared/evaluators/Classifier.pth)")
    s = add("uda", _uda, "accuracy of a prediction csv against a ground-truth csv")
    s.add_argument("pred_csv", type=Path, help="predictions: image_name,label")
    s.add_argument("gt_csv", type=Path, help="ground truth: image_name,label")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if getattr(a, "batch_size", 1) < 1:
        raise UserError(f"--batch-size must be >= 1, got {a.batch_size}")
    result = a.fn(a)
    print(json.dumps(result) if a.json else format_result(a.cmd, result), flush=True)
    return 0


run = functools.partial(cli_main, main)  # console entry point: main() with one-line errors

if __name__ == "__main__":
    run()
