"""Accuracy table of problem 3 (source / DANN / improved / target x scenario) as markdown.

    python scripts/p3_table.py [--data hw2_data] [--checkpoints checkpoints] [--out report/p3/accuracy.md]

Every number is computed here: each shipped checkpoint ``p3_<source>_<target>_<mode>.pt`` is
evaluated on the target domain's validation split. A cell is "-" when the checkpoint or the
data is missing (the reason is listed under the table).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.errors import cli_main
from common.training import pick_device
from p3_dann.analysis import SCENARIOS, add_report_args, checkpoint_path, evaluate_checkpoint

ORDER = ("source", "dann", "improved", "target")

ROW_NAMES = {"source": "Trained on source (lower bound)", "dann": "DANN",
             "improved": "Improved (DANN + mean-teacher pseudo-labels, 2 stages)", "target": "Trained on target (upper bound)"}


def build_table(data_root: str, ck_dir: str, device, cache_dir: str) -> tuple[str, dict]:
    results, notes = {}, []
    for src, tgt in SCENARIOS:
        for mode in ORDER:
            ck = checkpoint_path(src, tgt, mode, ck_dir)
            if not ck.is_file():
                continue
            if not (Path(data_root) / "digits" / tgt).is_dir() and not (Path(data_root) / tgt).is_dir():
                notes.append(f"{src}->{tgt} {mode}: no {tgt} data under {data_root}")
                continue
            r = evaluate_checkpoint(ck, data_root, device, cache_dir)
            meta = ck.with_suffix(".json")
            if meta.is_file():
                info = json.loads(meta.read_text())  # total includes a first stage (--init)
                r["train_time_s"] = info.get("train_time_total_s", info.get("train_time_s"))
            results[(src, tgt, mode)] = r
    header = "| method | " + " | ".join(f"{s} -> {t}" for s, t in SCENARIOS) + " |"
    lines = [header, "|---" * (len(SCENARIOS) + 1) + "|"]
    for mode in ORDER:
        cells = []
        for s, t in SCENARIOS:
            r = results.get((s, t, mode))
            cells.append(f"{100 * r['target_val_acc']:.2f} %" if r else "-")
        lines.append(f"| {ROW_NAMES[mode]} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Accuracy on the target domain's validation split ({data_root}); "
                 "'-': no shipped checkpoint (or no data) for that cell.")
    times = [f"{s}->{t} {m}: {r['train_time_s'] / 60:.1f} min" for (s, t, m), r in results.items()
             if r.get("train_time_s")]
    if times:
        lines.append("Training time (CPU unless the checkpoint's JSON says otherwise): " + "; ".join(times) + ".")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n", results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_report_args(ap, "report/p3/accuracy.md")
    args = ap.parse_args(argv)
    md, results = build_table(args.data_root, args.checkpoints, pick_device(args.device), args.cache_dir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        [dict(r, scenario=f"{s}->{t}") for (s, t, m), r in results.items()], indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    cli_main(main)
