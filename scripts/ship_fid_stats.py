"""Write the FID reference statistics that ship with the repo (``common/fid_stats/NAME-KEY.npz``).

    python scripts/ship_fid_stats.py --data hw2_data            # face/val, mnistm val, usps val

Each reference is computed once (or taken from the local cache), packed (fp32 mean + upper triangle
of the covariance) and keyed by the hash of its images' names and bytes, so any copy of the same
images finds it (``common.fid.reference_statistics``).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Sequence

from common import fid
from common.cli import examples
from common.errors import DataError, cli_main

REFERENCES = ("face_val", "mnistm_val", "usps_val")


def reference_folder(data: Path, name: str, tmp: Path) -> Path:
    if name == "face_val":
        folder = data / "face" / "val"
        if not folder.is_dir():
            raise DataError(f"reference folder not found: {folder}")
        return folder
    domain = name.split("_")[0]
    return fid.digit_split_folder(data, domain, "val", tmp)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=examples("python scripts/ship_fid_stats.py --data hw2_data",
                                                "python scripts/ship_fid_stats.py --only face_val"))
    p.add_argument("--data", default="hw2_data", help="data folder holding face/ and digits/ (default: hw2_data)")
    p.add_argument("--only", nargs="+", choices=REFERENCES, default=list(REFERENCES),
                   help="which references to write (default: all)")
    p.add_argument("--device", default=None, help="device for Inception (default: cuda when present, else cpu)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fid_ref_") as tmp:
        for name in args.only:
            folder = reference_folder(Path(args.data), name, Path(tmp))
            stats = fid.reference_statistics(folder, device=args.device)
            out = fid.SHIPPED_STATS_DIR / f"{name}-{fid.content_key(folder)}.npz"
            for old in fid.SHIPPED_STATS_DIR.glob(f"{name}-*.npz"):
                old.unlink()
            fid.save_packed(stats, out)
            print(f"{name}: {stats.n} images -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    cli_main(main)
