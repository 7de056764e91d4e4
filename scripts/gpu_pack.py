"""Pack the training data for a lent GPU (which receives at most 64 MiB per call) and unpack it there.

    python scripts/gpu_pack.py pack faces  --data hw2_data --out carry/faces_0 --part 0/2  # ~24 MB each
    python scripts/gpu_pack.py pack faces  --data hw2_data --out carry/faces_1 --part 1/2  # (38,464 faces)
    python scripts/gpu_pack.py pack digits --data hw2_data --out carry/digits_0 --part 0/3  # ~20 MiB each
    python scripts/gpu_pack.py unpack carry/faces --data hw2_data               # on the GPU machine
    python scripts/gpu_pack.py pack-init runs/gpu_s4 --out carry                # final snapshots -> carry/init_K

A pack is one .npz of WebP images (``--quality``: lossy 85 for faces, whose JPEGs average 3.3 KB and
would not fit; lossless (0) for digits, 1.34 KB each) plus the split's csv for digits. Digits went
lossy (q90) until session 16, which measured what that cost: 1000 mnistm train images score FID 29.73
against val, the same images through WebP q90 37.47 (4:2:0 chroma at 28x28 blurs the colours), so a
model trained on them aims at a floor 7.7 points higher; the face JPEGs through q85 move only 14.15 ->
15.04. Unpacking
writes lossless PNGs in the official layout (``face/train/NAME.png``,
``digits/mnistm/data/NAME`` + ``train.csv``), so every training script runs unchanged on them. Trained
numbers are always measured here on the original data, never on the re-encoded copy.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import DataError, UserError, cli_main  # noqa: E402

KINDS = {"faces": 85, "digits": 0}  # WebP quality; 0 = lossless


def _encode(args: tuple[str, int]) -> bytes:
    """One image as WebP: lossy at ``quality`` 1-100, lossless at 0."""
    from PIL import Image
    path, quality = args
    buf = io.BytesIO()
    with Image.open(path) as im:
        if quality == 0:
            im.convert("RGB").save(buf, "WEBP", lossless=True, quality=100, method=4)
        else:
            im.convert("RGB").save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


def _decode(args: tuple[bytes, str]) -> None:
    from PIL import Image
    data, out = args
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").save(out, "PNG", compress_level=1)


def _sources(kind: str, data: Path, limit: int | None) -> tuple[list[tuple[str, Path]], bytes | None]:
    """[(name in the pack, source file)], the csv's bytes (digits; its first ``limit`` rows) or None."""
    if kind == "faces":
        d = data / "face" / "train"
        if not d.is_dir():
            raise DataError(f"face training folder not found: {d} (run: bash hw2_download.sh)")
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        files = files[:limit] if limit else files
        if not files:
            raise DataError(f"no images in {d}")
        return [(p.stem + ".png", p) for p in files], None
    root = data / "digits" / "mnistm"
    table = root / "train.csv"
    if not table.is_file():
        raise DataError(f"mnistm train.csv not found: {table} (run: bash hw2_download.sh)")
    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    if "image_name" not in header:
        raise DataError(f"{table}: no image_name column")
    rows = rows[:limit] if limit else rows
    i = header.index("image_name")
    raw = table.read_bytes().splitlines(keepends=True)
    return [(r[i], root / "data" / r[i]) for r in rows], b"".join(raw[:len(rows) + 1])


def pack(kind: str, data: Path, out: Path, quality: int | None = None, limit: int | None = None,
         classifier: Path | None = None, workers: int | None = None, part: tuple[int, int] = (0, 1)) -> Path:
    """Write ``out/<kind>.npz``: the WebP bytes end to end + offsets + names (a tar would add 1 KB of
    header and padding per image, doubling the size), train.csv for digits and, given, the classifier."""
    import numpy as np
    from tqdm import tqdm
    if kind not in KINDS:
        raise UserError(f"unknown pack kind {kind!r} (faces or digits)")
    q = KINDS[kind] if quality is None else quality
    if not 0 <= q <= 100:
        raise UserError(f"--quality must be 0 (lossless) to 100, got {q}")
    items, rows = _sources(kind, data, limit)
    i, n = part
    if n > 1:  # every n-th image from the i-th: packs small enough to travel beside the tracked tree
        if not 0 <= i < n:  # (a digits part keeps the whole csv: train once every part is unpacked)
            raise UserError(f"--part {i}/{n}: parts are numbered 0..{n - 1}")
        items = items[i::n]
    missing = [str(p) for _, p in items if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} listed images are missing, e.g. {missing[0]}")
    extra = {}
    if rows is not None:
        extra["train_csv"] = np.frombuffer(rows, np.uint8)
    if classifier is not None:
        if not classifier.is_file():
            raise DataError(f"classifier not found: {classifier}")
        extra["classifier"] = np.frombuffer(classifier.read_bytes(), np.uint8)
    with ProcessPoolExecutor(workers or os.cpu_count()) as ex:
        blobs = list(tqdm(ex.map(_encode, [(str(p), q) for _, p in items], chunksize=256), total=len(items),
                          desc=f"pack {kind}", mininterval=2))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{kind}.npz"
    tmp = out / f".{kind}.tmp.npz"
    np.savez(tmp, blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets,
             names=np.array([n for n, _ in items]), **extra)
    os.replace(tmp, final)
    print(f"wrote {final}: {len(items)} images, {final.stat().st_size / 2**20:.1f} MiB (WebP {'lossless' if q == 0 else f'q{q}'})")
    return final


def _add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def unpack(pack_dir: Path, data: Path, workers: int | None = None) -> str:
    """Decode a pack folder's npz into the official layout under ``data``; returns the kind."""
    import numpy as np
    packs = sorted(pack_dir.glob("*.npz"))
    if len(packs) != 1 or packs[0].stem not in KINDS:
        raise DataError(f"{pack_dir}: expected exactly one faces.npz or digits.npz")
    kind = packs[0].stem
    img_dir = data / "face" / "train" if kind == "faces" else data / "digits" / "mnistm" / "data"
    img_dir.mkdir(parents=True, exist_ok=True)
    z = np.load(packs[0])
    blob, off, names = z["blob"].tobytes(), z["offsets"], [str(n) for n in z["names"]]
    jobs = [(blob[off[i]:off[i + 1]], str(img_dir / (Path(n).stem + ".png"))) for i, n in enumerate(names)]
    with ProcessPoolExecutor(workers or os.cpu_count()) as ex:
        list(ex.map(_decode, jobs, chunksize=256))
    if "train_csv" in z:
        (data / "digits" / "mnistm" / "train.csv").write_bytes(z["train_csv"].tobytes())
    if "classifier" in z:  # beside the data, which outlives the calls (a pack may not travel again)
        (data / "Classifier.pth").write_bytes(z["classifier"].tobytes())
    print(f"unpacked {len(jobs)} {kind} images into {img_dir}")
    return kind


# what one device call can bring back through $OUT: 8 files of 16 MiB, 64 MiB together
MAX_FILES, MAX_BYTES, MAX_TOTAL = 8, int(15.5 * 2**20), 62 * 2**20


def _bundle_items(runs: Path) -> list[Path]:
    """Files worth bringing back, most important first: logs/metrics/configs and the newest sample
    grid of every run, the problem-2 models, then the snapshots newest first (each run's final one,
    which keeps D, comes before any older one)."""
    small = [p for p in sorted(runs.rglob("*")) if p.is_file() and (
        p.suffix in (".log", ".jsonl", ".json") or p.name in ("end_at", "pids")) and "cache" not in p.parts]
    grids = []
    for d in sorted(q for q in runs.iterdir() if q.is_dir()):
        pngs = sorted((d / "samples").glob("*.png"))
        grids += pngs[-1:]
    models = sorted(runs.glob("p2_*/model.pt"))
    snaps = [sorted((d / "snapshots").glob("step_*.pt"), reverse=True)
             for d in sorted(runs.glob("p[12]_*"), reverse=True) if d.is_dir()]  # p2 before p1_B* before p1_A
    order = [s[i] for i in range(max(map(len, snaps), default=0)) for s in snaps if i < len(s)]  # newest first
    return small + grids + models + order


def bundle(runs: Path, out: Path, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES,
           max_total: int = MAX_TOTAL, skip: int = 0) -> list[Path]:
    """Pack ``runs`` into at most ``max_files`` tars of at most ``max_bytes`` each and ``max_total``
    together (first fit, in order of importance); what does not fit is named in left_out.txt inside
    the first tar and printed. ``skip`` > 0 leaves out the first ``skip`` items of that order, so a
    second call brings back what the first one left out (``bundle --skip N``, N printed by the first)."""
    if not runs.is_dir():
        raise DataError(f"run folder not found: {runs}")
    bins: list[list[Path]] = []
    sizes: list[int] = []
    left: list[str] = []
    items = _bundle_items(runs)[skip:]
    for p in items:  # once one item does not fit, the rest is left out too (so --skip can resume)
        n = p.stat().st_size + 1024
        if left or sum(sizes) + n + 4096 > max_total:
            left.append(str(p.relative_to(runs)))
            continue
        for i, used in enumerate(sizes):
            if used + n <= max_bytes:
                bins[i].append(p)
                sizes[i] += n
                break
        else:
            if len(bins) < max_files and n <= max_bytes - 4096:
                bins.append([p])
                sizes.append(n + 4096)
            else:
                left.append(str(p.relative_to(runs)))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, files in enumerate(bins):
        path = out / f"bundle_{i}.tar"
        with tarfile.open(path, "w") as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(runs)))
            if i == 0 and left:
                _add(tar, "left_out.txt", ("\n".join(left) + "\n").encode())
        written.append(path)
        print(f"{path}: {len(files)} files, {path.stat().st_size / 2**20:.1f} MiB")
    if left:
        print(f"left out ({len(left)}): {', '.join(left)}")
        print(f"bring them back with another call: gpu_pack.py bundle {runs} OUT --skip {skip + len(items) - len(left)}"
              " (after the items above, in the same order)")
    return written


INIT_RUNS = ("p1_A", "p1_B", "p1_B2", "p2_acgan", "p2_sagan")  # the GAN jobs of train_gpu.sh


def d_gap(metrics: Path, last: int = 10) -> float | None:
    """Mean ``d_real - d_fake`` (D's logits) over a GAN run's last ``last`` train logs; ~0 = D at chance."""
    if not metrics.is_file():
        return None
    recs = [r for r in map(json.loads, metrics.read_text().splitlines())
            if r.get("kind") == "train" and "d_real" in r and "d_fake" in r][-last:]
    return sum(r["d_real"] - r["d_fake"] for r in recs) / len(recs) if recs else None


def pack_init(runs: Path, out: Path, max_mib: float = 29.0, min_gap: float = 0.1) -> list[Path]:
    """Here, after ``bundle-extract``: each GAN run's newest snapshot that keeps D (and the diffusion
    run's model.pt) -> ``out/init_K/NAME.pt``
    (first fit into packs of at most ``max_mib``, which travel beside the ~35 MB tracked tree), so
    the next GPU run goes on from them (``train_gpu.sh unpack init_K``). Old init packs are replaced.
    A run whose D ended at chance (``d_gap`` < ``min_gap``: it no longer teaches G) is left out."""
    picks = []
    for name in INIT_RUNS:
        gap = d_gap(runs / name / "metrics.jsonl")
        if gap is not None and gap < min_gap:
            print(f"{name}: left out, its D is at chance (mean d_real - d_fake over the last logs {gap:.3f} < {min_gap})")
            continue
        for snap in sorted((runs / name / "snapshots").glob("step_*.pt"), reverse=True):
            meta = snap.with_suffix(".json")
            if meta.is_file() and json.loads(meta.read_text()).get("has_D"):
                picks.append((name, snap))
                break
    if (runs / "p2_diffusion" / "model.pt").is_file():  # the U-Net's EMA weights (no D to worry about)
        picks.append(("p2_diffusion", runs / "p2_diffusion" / "model.pt"))
    if not picks:
        raise DataError(f"no final snapshot with D under {runs}/{{{','.join(INIT_RUNS)}}}/snapshots "
                        f"and no {runs}/p2_diffusion/model.pt")
    limit = int(max_mib * 2**20)
    bins: list[list[tuple[str, Path]]] = []
    for name, snap in sorted(picks, key=lambda t: -t[1].stat().st_size):
        size = snap.stat().st_size
        if size > limit:
            raise DataError(f"{snap} is {size / 2**20:.1f} MiB, over --max-mib {max_mib}")
        for b in bins:
            if sum(q.stat().st_size for _, q in b) + size <= limit:
                b.append((name, snap))
                break
        else:
            bins.append([(name, snap)])
    for old in out.glob("init_*"):
        shutil.rmtree(old)
    dirs = []
    for k, b in enumerate(bins):
        d = out / f"init_{k}"
        d.mkdir(parents=True)
        for name, snap in b:
            shutil.copyfile(snap, d / f"{name}.pt")
        print(f"{d}: {', '.join(f'{n} ({s.name})' for n, s in b)}, "
              f"{sum(s.stat().st_size for _, s in b) / 2**20:.1f} MiB")
        dirs.append(d)
    return dirs


def extract(bundles: Path, dest: Path) -> int:
    """Unpack every bundle_*.tar of ``bundles`` into ``dest``; returns the number of files."""
    tars = sorted(bundles.glob("bundle_*.tar"))
    if not tars:
        raise DataError(f"no bundle_*.tar in {bundles}")
    n = 0
    for t in tars:
        with tarfile.open(t) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and not m.name.startswith(("/", "..")) and ".." not in m.name]
            tar.extractall(dest, members=members, filter="data")
            n += len(members)
    print(f"extracted {n} files into {dest}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/gpu_pack.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("kind", choices=sorted(KINDS))
    a.add_argument("--data", default="hw2_data")
    a.add_argument("--out", required=True)
    a.add_argument("--quality", type=int, default=None,
                   help="WebP quality 1-100, 0 = lossless (default: faces 85, digits 0)")
    a.add_argument("--limit", type=int, default=None, help="first N images only (tests)")
    a.add_argument("--classifier", default=None, help="also pack the course classifier (evaluation only)")
    a.add_argument("--part", default="0/1", help="I/N: every N-th image from the I-th (default 0/1 = all)")
    b = sub.add_parser("unpack")
    b.add_argument("pack_dir")
    b.add_argument("--data", default="hw2_data")
    c = sub.add_parser("bundle", help="on the GPU machine: runs folder -> at most 8 tars of 15.5 MiB in OUT")
    c.add_argument("runs")
    c.add_argument("out")
    c.add_argument("--skip", type=int, default=0, help="leave out the first N items (a second call's share)")
    e = sub.add_parser("bundle-extract", help="here: unpack the bundles a device call brought back")
    e.add_argument("bundles")
    e.add_argument("dest")
    f = sub.add_parser("pack-init", help="here: each GAN run's final snapshot (with D) -> OUT/init_K, to go on next time")
    f.add_argument("runs")
    f.add_argument("--out", default="carry")
    f.add_argument("--max-mib", type=float, default=29.0)
    f.add_argument("--min-gap", type=float, default=0.1, help="leave out runs whose D ended at chance")
    args = p.parse_args(argv)
    if args.cmd == "pack-init":
        pack_init(Path(args.runs), Path(args.out), args.max_mib, args.min_gap)
    elif args.cmd == "bundle":
        bundle(Path(args.runs), Path(args.out), skip=args.skip)
    elif args.cmd == "bundle-extract":
        extract(Path(args.bundles), Path(args.dest))
    elif args.cmd == "pack":
        i, _, n = args.part.partition("/")
        if not (i.isdigit() and n.isdigit() and int(n) >= 1):
            raise UserError(f"--part must be I/N (e.g. 0/2), got {args.part!r}")
        part = (int(i), int(n))
        pack(args.kind, Path(args.data), Path(args.out), args.quality, args.limit,
             Path(args.classifier) if args.classifier else None, part=part)
    else:
        unpack(Path(args.pack_dir), Path(args.data))
    return 0


if __name__ == "__main__":
    cli_main(main)
