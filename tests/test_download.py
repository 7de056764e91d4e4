"""hw2_download.sh with HW2_DATA_FROM: unpack, idempotent rerun, broken archive, unfinished copy."""
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import REPO, make_digit_domain


def _run(tmp_path, src, dest):
    env = {"PATH": "/usr/bin:/bin", "HW2_DATA_FROM": str(src), "HW2_DATA_DIR": str(dest)}
    return subprocess.run(["bash", str(REPO / "hw2_download.sh")], env=env, capture_output=True, text=True)


def _archives(tmp_path) -> Path:
    build = tmp_path / "build"
    make_digit_domain(build / "hw2_data", "usps", n_train=4, n_val=2, channels=1)
    src = tmp_path / "src"
    src.mkdir()
    with tarfile.open(src / "usps.tar.gz", "w:gz") as t:
        t.add(build / "hw2_data", arcname="hw2_data")
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
