"""The shared CLI vocabulary: field help from comments, canonical flags, deprecated spellings,
renamed config fields, dry runs that never touch a real run, and every entry point's --help."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from common.cli import add_config_args, add_run_args, config_from_args, config_from_dict, dry_run_dir, field_docs
from common.errors import UserError
from tests.conftest import REPO


@dataclasses.dataclass
class Base:
    lr: float = 1e-3  # learning rate
    data_root: str = "hw2_data"  # folder holding digits/


@dataclasses.dataclass
class Child(Base):
    max_steps: int = 10  # total steps,
    # counted from the first run
    save_every_min: float = 5.0
    lr: float = 2e-3  # learning rate of the child


def test_field_docs_come_from_the_comments_across_the_bases():
    docs = field_docs(Child)
    assert docs["lr"] == "learning rate of the child"
    assert docs["data_root"] == "folder holding digits/"
    assert docs["max_steps"] == "total steps, counted from the first run"
    assert "save_every_min" not in docs


def test_renamed_flags_and_deprecated_spellings(capsys):
    p = argparse.ArgumentParser()
    add_run_args(p, data_default=None, data_help="", run_default="runs/x")
    add_config_args(p, Child, flags={"data_root": "--data"}, deprecated={"--steps": "max_steps"})
    help_text = p.format_help()
    assert "--data DATA_ROOT" in help_text and "learning rate of the child (default: 0.002)" in help_text
    assert "--data-root" not in help_text and "--steps" not in help_text and "--quiet" not in help_text
    args = p.parse_args(["--data-root", "d", "--steps", "7", "--run", "r", "--quiet"])
    err = capsys.readouterr().err
    for old, new in (("--data-root", "--data"), ("--steps", "--max-steps"), ("--run", "--run-dir"),
                     ("--quiet", "--no-progress")):
        assert f"{old} is deprecated" in err and f"use {new}" in err
    cfg = config_from_args(Child, args)
    assert (cfg.data_root, cfg.max_steps, args.run_dir, args.no_progress) == ("d", 7, "r", True)
    args = p.parse_args([])
    assert (args.no_progress, args.run_dir, config_from_args(Child, args)) == (False, None, Child())


def test_configs_saved_with_old_field_names_still_load():
    old = {"lr": 0.1, "steps": 99, "save_every_s": 120.0, "unknown": 1}  # p3's earlier names, in seconds
    assert config_from_dict(Child, old) == Child(lr=0.1, max_steps=99, save_every_min=2.0)
    assert config_from_dict(Child, {"ckpt_minutes": 3.0}) == Child(save_every_min=3.0)  # the GANs' earlier name
    assert config_from_dict(Child, {"steps": 5, "max_steps": 6}).max_steps == 6  # the new name wins


def test_dry_run_dir_is_fresh_or_refuses_a_used_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = dry_run_dir(None, "p1"), dry_run_dir(None, "p1")
    assert a != b and a.parent.name == "runs" and not any(a.iterdir())
    assert dry_run_dir(str(tmp_path / "new"), "p1") == tmp_path / "new"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "last.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="not empty"):
        dry_run_dir(str(tmp_path / "used"), "p1")


@pytest.mark.parametrize("module", ["p1_gan.train", "p2_diffusion_acgan.train", "p3_dann.train"])
def test_trainer_help_explains_every_option_and_gives_examples(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    for flag in ("--data", "--run-dir", "--max-steps", "--batch-size", "--seed", "--threads", "--device",
                 "--save-every-min", "--no-progress", "--dry-run", "--init-from"):
        assert flag in out, (module, flag)
    assert "examples:" in out and out.count(f"python -m {module}") >= 3


@pytest.mark.parametrize("model", ["diffusion", "acgan", "sagan"])
def test_every_trainer_option_has_words_not_just_a_default(model):
    from p1_gan.train import build_parser as p1
    from p2_diffusion_acgan.train import build_parser as p2
    from p3_dann.train import build_parser as p3
    for parser in (p1(), p2(model), p3()):
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS) or not action.option_strings:
                continue
            assert not action.help.startswith("(default"), (action.option_strings, action.help)


@pytest.mark.parametrize("path", ["p1_gan/train.py", "p2_diffusion_acgan/inference.py", "p3_dann/train.py"])
def test_problem_scripts_run_by_path(path, tmp_path):
    """``python p1_gan/train.py`` from the repo and ``python train.py`` inside the folder both work."""
    r = subprocess.run([sys.executable, str(REPO / path), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder, name = path.split("/")
    r = subprocess.run([sys.executable, name, "--help"], capture_output=True, text=True, cwd=REPO / folder)
    assert r.returncode == 0, r.stderr
