"""hw2_download.sh with HW2_DATA_FROM: unpack, idempotent rerun, broken archive, unfinished copy."""
import subprocess
import tarfile
from pathlib import Path

import io

from tests.conftest import REPO, make_digit_domain, make_face_folder


def _run(tmp_path, src, dest):
    env = {"PATH": "/usr/bin:/bin", "HW2_DATA_FROM": str(src), "HW2_DATA_DIR": str(dest)}
    return subprocess.run(["bash", str(REPO / "hw2_download.sh")], env=env, capture_output=True, text=True)


def _archives(tmp_path, parts=("face", "mnistm", "usps"), bare: bool = False) -> Path:
    """One archive per part, as the course ships them (``hw2_data/...``, or bare ``face/``, ``digits/``)."""
    build = tmp_path / "build" / "hw2_data"
    make_face_folder(build / "face" / "train", n=3, size=8)
    make_face_folder(build / "face" / "val", n=2, size=8, seed=1)
    make_digit_domain(build, "mnistm", n_train=4, n_val=2)
    make_digit_domain(build, "usps", n_train=4, n_val=2, channels=1)
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for part in parts:
        inner = build / ("face" if part == "face" else f"digits/{part}")
        name = ("face" if part == "face" else f"digits/{part}") if bare else ("hw2_data/face" if part == "face" else f"hw2_data/digits/{part}")
        with tarfile.open(src / f"{part}.tar.gz", "w:gz") as t:
            t.add(inner, arcname=name)
    return src


def test_unpack_then_noop(tmp_path):
    src, dest = _archives(tmp_path), tmp_path / "out" / "hw2_data"
    r = _run(tmp_path, src, dest)
    assert r.returncode == 0, r.stderr
    assert (dest / ".complete").is_file()
    assert len(list((dest / "digits" / "usps" / "data").glob("*.png"))) == 6
    assert (dest / "digits" / "usps" / "val.csv").read_text().startswith("image_name,label")
    (dest / "marker").write_text("kept")
    r2 = _run(tmp_path, src, dest)
    assert r2.returncode == 0 and "nothing to do" in r2.stdout
    assert (dest / "marker").read_text() == "kept"  # second run touched nothing
    assert not list(dest.parent.glob(".hw2_data.partial*"))


def test_unfinished_copy_is_redone(tmp_path):
    src, dest = _archives(tmp_path), tmp_path / "hw2_data"
    (dest / "digits").mkdir(parents=True)  # a copy cut short: no .complete
    (dest / "digits" / "half.png").write_bytes(b"x")
    r = _run(tmp_path, src, dest)
    assert r.returncode == 0, r.stderr
    assert (dest / ".complete").is_file() and not (dest / "digits" / "half.png").exists()
    assert (dest / "digits" / "usps" / "train.csv").is_file()


def test_broken_archive_leaves_nothing(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "hw2_data"
    src.mkdir()
    (src / "face.tar.gz").write_bytes(b"\x1f\x8b broken")
    r = _run(tmp_path, src, dest)
    assert r.returncode != 0 and "broken archive" in r.stderr
    assert not dest.exists() and not list(tmp_path.glob(".hw2_data.partial*"))


def test_bad_source_folder(tmp_path):
    r = _run(tmp_path, tmp_path / "nope", tmp_path / "hw2_data")
    assert r.returncode != 0 and "HW2_DATA_FROM is not a folder" in r.stderr


def test_a_partial_set_is_refused_and_never_marked_complete(tmp_path):
    src, dest = _archives(tmp_path, parts=("usps",)), tmp_path / "hw2_data"
    r = _run(tmp_path, src, dest)
    assert r.returncode != 0 and "missing: face/train face/val digits/mnistm/train.csv" in r.stderr
    assert not dest.exists()


def test_bare_layout_over_an_unfinished_copy_and_stale_partials(tmp_path):
    src, dest = _archives(tmp_path, bare=True), tmp_path / "hw2_data"
    (dest / "face").mkdir(parents=True)  # unfinished earlier copy
    (tmp_path / ".hw2_data.partial.abc123").mkdir()  # left by a SIGKILL during unpack
    r = _run(tmp_path, src, dest)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == [".complete", "digits", "face"]  # no nested old copy
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".hw2")) == []


def test_unsafe_members_are_refused_before_extraction(tmp_path):
    for kind in ("dotdot", "absolute", "symlink"):
        src, dest = tmp_path / kind / "src", tmp_path / kind / "hw2_data"
        src.mkdir(parents=True)
        with tarfile.open(src / "face.tar.gz", "w:gz") as t:
            info = tarfile.TarInfo({"dotdot": "hw2_data/../../evil.txt", "absolute": "/tmp/evil.txt",
                                    "symlink": "hw2_data/face/link"}[kind])
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(info)
            else:
                info.size = 4
                t.addfile(info, io.BytesIO(b"evil"))
        r = _run(tmp_path, src, dest)
        assert r.returncode != 0 and "outside the plain-files rule" in r.stderr, (kind, r.stderr)
        assert not dest.exists() and not (tmp_path / "evil.txt").exists()
