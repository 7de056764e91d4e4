import numpy as np
import pytest
import torch
from PIL import Image

from common.data import (ImageFolder, TensorBatches, digit_dataset, digit_split, list_images, read_label_csv, to_float,
                         to_uint8)
from common.errors import DataError
from tests.conftest import needs_data


def test_digit_dataset_rgb_and_usps_to_rgb(tiny_digits):
    m = digit_dataset(tiny_digits, "mnistm", "train")
    u = digit_dataset(tiny_digits, "usps", "val")
    x, y = m[3]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32 and y == 3
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0  # the white square
    xu, yu = u[0]
    assert xu.shape == (3, 28, 28) and torch.equal(xu[0], xu[1]) and torch.equal(xu[1], xu[2])
    x1, _ = digit_dataset(tiny_digits, "usps", "val", channels=1)[0]
    assert x1.shape == (1, 28, 28)
    assert len(m) == 40 and len(u) == 20


def test_load_all_matches_getitem(tiny_digits):
    ds = digit_dataset(tiny_digits, "mnistm", "val")
    x, y = ds.load_all(progress=False)
    assert x.dtype == torch.uint8 and x.shape == (20, 3, 28, 28) and y.tolist() == ds.labels
    assert torch.allclose(to_float(x[5]), ds[5][0])
    assert torch.equal(to_uint8(to_float(x)), x)


def test_older_layout_and_face_folder(tmp_path, tiny_faces):
    d = tmp_path / "old" / "digits" / "usps"
    (d / "test").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(d / "test" / "a.png")
    (d / "test.csv").write_text("image_name,label\na.png,7\n")
    s = digit_split(tmp_path / "old", "usps", "test")
    assert s.images == d / "test"
    assert ImageFolder(s.images, s.csv)[0][1] == 7
    faces = ImageFolder(tiny_faces / "face" / "train")  # .jpg, no csv
    assert len(faces) == 32 and faces[0][0].shape == (3, 64, 64) and faces[0][1] == -1


@pytest.mark.parametrize("content,match", [
    ("name,label\na.png,1\n", "needs columns image_name,label"),
    ("image_name,label\na.png,10\n", "line 2: label 10 outside 0-9"),
    ("image_name,label\na.png,x\n", "label 'x' is not an integer"),
    ("image_name,label\nmissing.png,1\n", "image not found"),
])
def test_bad_csv(tmp_path, content, match):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "l.csv").write_text(content)
    with pytest.raises(DataError, match=match):
        ImageFolder(tmp_path / "img", tmp_path / "l.csv")


def test_bad_folders_and_files(tmp_path):
    with pytest.raises(DataError, match="image folder not found: .*nope"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(DataError, match="csv file not found"):
        read_label_csv(tmp_path / "none.csv")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"unreadable image: .*0\.png"):
        ImageFolder(tmp_path / "bad")[0]


def test_tensor_batches():
    x = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    it = iter(TensorBatches(x, batch_size=4, generator=g))
    seen = torch.cat([next(it)[0] for _ in range(2)])
    assert len(set(seen.tolist())) == 8  # no repeats within an epoch
    small = iter(TensorBatches(torch.arange(6), batch_size=3, generator=g))
    for _ in range(3):  # endless: a new shuffle each epoch, every image once per epoch
        assert sorted(torch.cat([next(small)[0], next(small)[0]]).tolist()) == list(range(6))
    with pytest.raises(DataError, match="smaller than batch size"):
        TensorBatches(torch.zeros(2), batch_size=3)


@needs_data("digits", "usps")
def test_real_usps_val():
    ds = digit_dataset("hw2_data", "usps", "val")
    assert len(ds) == 1458 and ds[0][0].shape == (3, 28, 28)


def test_label_csv_encodings_and_names(tmp_path):
    from common.data import read_label_csv
    (tmp_path / "bom.csv").write_bytes("\ufeffimage_name,label\n0.png,3\n".encode("utf-8"))
    assert read_label_csv(tmp_path / "bom.csv") == (["0.png"], [3])  # Excel's UTF-8 with a BOM
    (tmp_path / "latin.csv").write_bytes("image_name,label\n\xe9.png,3\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv: not UTF-8 text"):
        read_label_csv(tmp_path / "latin.csv")
    for bad in ("../x.png", "/etc/passwd", "sub/x.png", ".."):
        (tmp_path / "p.csv").write_text(f"image_name,label\n{bad},1\n")
        with pytest.raises(DataError, match="must be a file name, not a path"):
            read_label_csv(tmp_path / "p.csv")
