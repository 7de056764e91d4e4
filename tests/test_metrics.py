"""Inception Score math, face score, digit accuracy and adaptation accuracy on constructed inputs."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common import digit_classifier as dc
from common.data import load_image, read_label_csv, to_float
from common.errors import DataError, UserError
from common.face_score import count_faces, face_score, face_score_of_images
from common.inception_score import inception_score, inception_score_from_probs, is_weights_path
from common.uda import uda_accuracy
from tests.conftest import DATA, make_digit_domain, needs_data, needs_shared


# ----------------------------------------------------------------------------- Inception Score
def test_uniform_predictions_give_is_one():
    mean, std = inception_score_from_probs(np.full((50, 1000), 1e-3), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("k", [1, 2, 7])
def test_k_classes_used_equally_one_hot_give_is_k(k):
    p = np.eye(1000)[np.tile(np.arange(k), 10 * 3)]  # each split holds every class 3 times
    mean, std = inception_score_from_probs(p, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_with_a_stand_in_classifier_on_images():
    """The image path: batches -> [-1,1] -> 299x299 -> classifier -> softmax -> IS."""
    seen = []

    def stand_in(x):  # class = brightness bucket of the image: 4 classes used equally
        seen.append((tuple(x.shape), float(x.min()), float(x.max())))
        return F.one_hot(((x.mean((1, 2, 3)) + 1) * 2).clamp(0, 3).long(), 1000).float() * 50
    levels = torch.tensor([20, 80, 150, 230], dtype=torch.uint8)
    x = levels[torch.arange(40) % 4].view(40, 1, 1, 1).expand(40, 3, 16, 16).contiguous()
    mean, std = inception_score(x, splits=10, batch_size=8, device="cpu", classifier=stand_in)
    assert mean == pytest.approx(4.0, rel=1e-6) and std < 1e-6
    assert seen[0][0] == (8, 3, 299, 299) and -1 <= seen[0][1] and seen[0][2] <= 1
    mean1, _ = inception_score(x[::4], splits=10, device="cpu", classifier=stand_in)  # one class only
    assert mean1 == pytest.approx(1.0, rel=1e-6)


def test_is_loads_torchvision_weights_from_the_hub_dir(tmp_path, monkeypatch):
    """A (random) torchvision Inception-v3 state dict where the real one belongs is loaded and run."""
    import torchvision
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    is_weights_path().parent.mkdir(parents=True)
    torch.save(net.state_dict(), is_weights_path())
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    mean, std = inception_score(x, splits=2, device="cpu")
    assert 1.0 <= mean < 1000 and np.isfinite(std)


def test_is_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="at least 10"):
        inception_score_from_probs(np.full((5, 10), 0.1))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    with pytest.raises(UserError, match=str(is_weights_path().parent)):
        inception_score(folder, device="cpu")
    with pytest.raises(UserError, match="not found"):
        inception_score(tmp_path / "missing")


# ----------------------------------------------------------------------------- face score
def astronaut_face_64() -> np.ndarray:
    """The face of scikit-image's astronaut cropped like a CelebA crop and resized to 64x64.

    (The whole 512x512 photo shrunk to 64x64 leaves an ~11 px face: dlib's 80x80 HOG window
    with one upsample needs ~40 px, so only the face crop is a fair 64x64 test image.)
    """
    from skimage.data import astronaut
    return np.array(Image.fromarray(astronaut()[0:190, 130:320]).resize((64, 64), Image.BILINEAR))


def test_face_detector_on_astronaut_and_grey():
    assert count_faces(astronaut_face_64()) == 1
    assert count_faces(np.full((64, 64, 3), 128, np.uint8)) == 0


def test_face_score_of_a_folder_skips_unreadable_files(tmp_path):
    face = astronaut_face_64()
    Image.fromarray(face).save(tmp_path / "0.png")
    Image.fromarray(face).save(tmp_path / "1.jpg", quality=95)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "2.png")
    Image.fromarray(face).convert("L").save(tmp_path / "3.png")  # grey-level file: loaded as RGB
    (tmp_path / "4.png").write_bytes(b"not an image")
    r = face_score(tmp_path)
    assert (r.n, r.n_one_face, r.unreadable) == (4, 3, ["4.png"])
    assert r.percent == pytest.approx(75.0)
    x = torch.from_numpy(np.stack([face, np.full((64, 64, 3), 128, np.uint8)])).permute(0, 3, 1, 2)
    assert face_score_of_images(x).percent == pytest.approx(50.0)
    assert face_score_of_images(to_float(x)).percent == pytest.approx(50.0)


def test_face_score_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        face_score(tmp_path / "missing")
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable images"):
        face_score(tmp_path)


# ----------------------------------------------------------------------------- digit accuracy
@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A LeNet trained for a few steps on learnable synthetic digits, saved like Classifier.pth."""
    root = tmp_path_factory.mktemp("digits")
    d = make_digit_domain(root, "synth", n_train=100, n_val=30, seed=3)
    names, labels = read_label_csv(d / "train.csv")
    x = to_float(torch.from_numpy(np.stack([load_image(d / "data" / n) for n in names])).permute(0, 3, 1, 2))
    y = torch.tensor(labels)
    torch.manual_seed(0)
    model = dc.LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster (and much faster on a busy CPU)
    try:
        for _ in range(60):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    path = root / "Classifier.pth"
    torch.save({"state_dict": model.state_dict(), "optimizer": {}}, path)
    return path, d


def _named_folder(src_dir, csv_path, out, wrong_every=0):
    """Copy images to ``out`` named ``{label}_{i:03d}.png``; every ``wrong_every``-th gets label+1."""
    out.mkdir()
    names, labels = read_label_csv(csv_path)
    for i, (n, y) in enumerate(zip(names, labels)):
        if wrong_every and i % wrong_every == 0:
            y = (y + 1) % 10
        Image.open(src_dir / n).save(out / f"{y}_{i:03d}.png")
    return labels


def test_digit_accuracy_of_named_folder(tiny_classifier, tmp_path):
    ckpt, d = tiny_classifier
    model = dc.load_classifier(ckpt)
    names, labels = read_label_csv(d / "val.csv")
    imgs = torch.from_numpy(np.stack([load_image(d / "data" / n) for n in names])).permute(0, 3, 1, 2)
    pred = dc.predict(model, imgs)
    assert (pred == np.array(labels)).mean() >= 0.9  # it learned the synthetic digits

    _named_folder(d / "data", d / "val.csv", tmp_path / "gen", wrong_every=3)
    r = dc.accuracy_of_folder(tmp_path / "gen", ckpt)
    named = np.array([(y + 1) % 10 if i % 3 == 0 else y for i, y in enumerate(labels)])
    assert r.n == 30
    assert r.accuracy == pytest.approx((pred == named).mean())
    assert r.per_digit == {k: pytest.approx((pred[named == k] == k).mean()) for k in range(10)}
    # in memory, float input in [-1, 1] gives the same answer as uint8
    r2 = dc.accuracy_of_images(to_float(imgs), named, model)
    assert r2.accuracy == pytest.approx(r.accuracy)


def test_digit_classifier_errors(tiny_classifier, tmp_path, monkeypatch):
    ckpt, d = tiny_classifier
    torch.save({"model": {}}, tmp_path / "nosd.pth")
    with pytest.raises(UserError, match="state_dict"):
        dc.load_classifier(tmp_path / "nosd.pth")
    torch.save({"state_dict": {"fc.weight": torch.zeros(1)}}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="LeNet"):
        dc.load_classifier(tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="not found"):
        dc.load_classifier(tmp_path / "missing.pth")
    monkeypatch.setattr(dc, "DEFAULT_CLASSIFIER", tmp_path / "nowhere" / "Classifier.pth")
    with pytest.raises(UserError, match="--classifier"):
        dc.load_classifier(None)
    (tmp_path / "gen").mkdir()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "gen" / "x_001.png")
    with pytest.raises(DataError, match="x_001.png"):
        dc.accuracy_of_folder(tmp_path / "gen", ckpt)
    with pytest.raises(UserError, match="one label per image"):
        dc.accuracy_of_images(torch.zeros(2, 3, 28, 28, dtype=torch.uint8), [1], dc.load_classifier(ckpt))


@needs_shared("evaluators", "Classifier.pth")
@needs_data("digits", "mnistm", "val.csv")
def test_real_classifier_on_real_mnistm(tmp_path):
    root = DATA / "digits" / "mnistm"
    names, labels = read_label_csv(root / "val.csv")
    with open(tmp_path / "few.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "label")] + list(zip(names[:100], labels[:100])))
    _named_folder(root / "data", tmp_path / "few.csv", tmp_path / "gen")
    r = dc.accuracy_of_folder(tmp_path / "gen")
    assert r.n == 100 and r.accuracy >= 0.8


# ----------------------------------------------------------------------------- adaptation accuracy
def _csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("image_name", "label")] + rows)
    return path


def test_uda_accuracy_counts_missing_and_lists_extra(tmp_path):
    gt = _csv(tmp_path / "gt.csv", [("a.png", 1), ("b.png", 2), ("c.png", 3), ("d.png", 4)])
    pred = _csv(tmp_path / "pred.csv", [("b.png", 2), ("a.png", 1), ("c.png", 0), ("z.png", 5)])
    r = uda_accuracy(pred, gt)
    assert (r.correct, r.n) == (2, 4) and r.accuracy == pytest.approx(0.5)
    assert r.missing_in_pred == ["d.png"] and r.extra_in_pred == ["z.png"]
    assert uda_accuracy(gt, gt).accuracy == 1.0


def test_uda_bad_csvs(tmp_path):
    gt = _csv(tmp_path / "gt.csv", [("a.png", 1)])
    with pytest.raises(DataError, match="twice"):
        uda_accuracy(_csv(tmp_path / "dup.csv", [("a.png", 1), ("a.png", 2)]), gt)
    (tmp_path / "nohdr.csv").write_text("name,y\na.png,1\n")
    with pytest.raises(DataError, match="image_name"):
        uda_accuracy(tmp_path / "nohdr.csv", gt)
    with pytest.raises(DataError, match="not found"):
        uda_accuracy(tmp_path / "missing.csv", gt)
