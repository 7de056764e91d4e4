#!/usr/bin/env bash
# Fetch the homework data into hw2_data/ (next to this script; override with HW2_DATA_DIR).
#
#   bash hw2_download.sh                              # official archive from Google Drive (gdown)
#   HW2_DATA_FROM=../shared/data bash hw2_download.sh # unpack the *.tar.gz archives found there
#
# Safe to rerun: a finished copy carries hw2_data/.complete and a second run does nothing. Work
# happens in a staging folder that is moved into place only when complete, so an interrupted or
# broken download never leaves a half-written hw2_data/; it is detected and redone next time.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${HW2_DATA_DIR:-$here/hw2_data}
from=${HW2_DATA_FROM:-}
gdrive_id=1YxkObGDlqZM0-9Zq-QMjk7q1vND4UJl3
py=${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}

die() { echo "hw2_download.sh: $*" >&2; exit 1; }

if [ -f "$dest/.complete" ]; then
  echo "hw2_data already present in $dest ($(cat "$dest/.complete")); nothing to do"
  exit 0
fi

parent=$(dirname "$dest")
mkdir -p "$parent"
for stale in "$parent"/.hw2_data.partial.* "$parent"/.hw2_data.old.*; do  # left by a killed run
  [ -e "$stale" ] && { echo "removing $stale (left by an interrupted run)"; rm -rf "$stale"; }
done
stage=$(mktemp -d "$parent/.hw2_data.partial.XXXXXX")
old=""
trap 'rm -rf "$stage"; [ -n "$old" ] && [ -d "$old" ] && rm -rf "$old"' EXIT

# Member rule, checked before anything is extracted: only regular files and folders, with relative
# paths that stay inside the destination (no absolute paths, no '..', no links or devices).
check_members() {
  "$py" - "$1" <<'PY' || exit 1  # it printed why
import sys, tarfile, zipfile
path = sys.argv[1]
def bad(name):
    parts = name.replace("\\", "/").split("/")
    return name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":")
try:
    if path.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            names = [(i.filename, "file") for i in z.infolist()]
    else:
        with tarfile.open(path) as t:
            names = [(m.name, "file" if m.isfile() or m.isdir() else "link/device") for m in t.getmembers()]
except Exception as e:  # gzip, tar and zip errors of a truncated or foreign file
    sys.exit(f"hw2_download.sh: broken archive {path}: {type(e).__name__}: {e}")
for name, kind in names:
    if bad(name) or kind != "file":
        sys.exit(f"hw2_download.sh: refusing {path}: member {name!r} ({kind}) is outside the plain-files rule")
PY
}

if [ -n "$from" ]; then
  [ -d "$from" ] || die "HW2_DATA_FROM is not a folder: $from"
  shopt -s nullglob
  archives=("$from"/*.tar.gz)
  [ ${#archives[@]} -gt 0 ] || die "no *.tar.gz archives in HW2_DATA_FROM=$from"
  for a in "${archives[@]}"; do
    echo "unpacking $a"
    check_members "$a"
    tar xzf "$a" -C "$stage" --no-same-owner || die "broken archive: $a"
  done
  source_desc="unpacked from $(cd "$from" && pwd)"
else
  zip="$parent/hw2_data.zip"
  if [ ! -f "$zip" ] || ! unzip -tq "$zip" >/dev/null 2>&1; then
    rm -f "$zip" "$zip.part"
    "$py" -c "import gdown" 2>/dev/null || die "gdown is missing: run 'make venv' or 'pip install gdown' (or set HW2_DATA_FROM=DIR with the *.tar.gz archives)"
    echo "downloading the official archive (Google Drive id $gdrive_id)"
    "$py" -m gdown "$gdrive_id" -O "$zip.part" || die "download failed (no network?); rerun, or set HW2_DATA_FROM=DIR"
    unzip -tq "$zip.part" >/dev/null || die "downloaded archive is broken; rerun to fetch it again"
    mv "$zip.part" "$zip"
  fi
  echo "unzipping $zip"
  check_members "$zip"
  unzip -q "$zip" -d "$stage" || die "cannot unzip $zip"
  source_desc="official archive $gdrive_id"
fi

# The archives hold hw2_data/...; accept a bare face/ + digits/ too.
if [ -d "$stage/hw2_data" ]; then root="$stage/hw2_data"; else root="$stage"; fi
# Complete means every part the three problems read: the face splits and the mnistm and usps digits
# (an evaluation split named val, or test in the older layout of the same homework).
missing=""
for part in face/train face/val digits/mnistm/train.csv digits/mnistm/val.csv digits/usps/train.csv digits/usps/val.csv; do
  alt=${part/val/test}
  [ -e "$root/$part" ] || [ -e "$root/$alt" ] || missing="$missing $part"
done
[ -z "$missing" ] || die "the data is incomplete, missing:$missing (found: $(ls "$root" | tr '\n' ' ')); nothing was installed"
echo "$source_desc on $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$root/.complete"

if [ -e "$dest" ]; then  # an earlier, unfinished copy: replace it (moved aside, never into the new copy)
  echo "replacing incomplete $dest"
  old=$(mktemp -d "$parent/.hw2_data.old.XXXXXX")
  mv "$dest" "$old/"
fi
mv "$root" "$dest"
[ -f "$dest/.complete" ] || die "internal error: $dest/.complete missing"
if [ -z "$from" ]; then rm -f "$zip"; fi
echo "hw2_data ready in $dest: $(ls "$dest" | tr '\n' ' ')"
