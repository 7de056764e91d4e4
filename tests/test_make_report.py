"""scripts/make_report.py --fast on tiny checkpoints and tiny data: every section is written, every
figure it names exists, and numbers that cannot be measured say why."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import make_face_folder


def tiny_checkpoints(folder: Path, data: Path) -> Path:
    from common.checkpoint import export_state, shipped_form
    from p1_gan.config import build_models, method_defaults
    from p2_diffusion_acgan.config import DiffusionConfig, build_unet, gan_config_class
    from p2_diffusion_acgan.gans import build_gan
    from p3_dann.train import train
    from tests.test_p3 import tiny_cfg

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for m in "AB":
        cfg = dataclasses.replace(method_defaults(m), ngf=4, ndf=4)
        G, D = build_models(cfg)
        saved = dataclasses.asdict(cfg) | ({"candidates": 2} if m == "B" else {})  # B: best of 2 by its D
        export_state({"config": saved, "step": 3, "G": G.state_dict(), "D": D.state_dict(), "ema": None},
                     folder / f"p1_method{m}.pt", include_d=m == "B")
    dcfg = DiffusionConfig(base_channels=8, channel_mults=(1, 1, 1), dropout=0.0)
    torch.save(shipped_form(dataclasses.asdict(dcfg), build_unet(dcfg).state_dict(), 2, kind="p2_diffusion"),
               folder / "p2_diffusion.pt")
    for m in ("acgan", "sagan"):
        gcfg = gan_config_class(m)(g_channels=8, d_channels=8)
        G, _ = build_gan(gcfg)
        export_state({"config": dataclasses.asdict(gcfg), "step": 2, "G": G.state_dict(), "ema": None},
                     folder / f"p2_{m}.pt")
    cfg = tiny_cfg(data, mode="target", max_steps=5, log_every=100, augment_source="none")
    train(cfg, folder.parent / "p3run", export=str(folder / "p3_mnistm_usps_target.pt"), progress=False)
    return folder


@pytest.mark.slow
def test_make_report_fast_writes_every_section(tiny_digits, tmp_path, monkeypatch):
    import make_report
    monkeypatch.setenv("HW2_CACHE", str(tmp_path / "cache"))  # tiny statistics stay out of the user's cache
    data = tiny_digits
    make_face_folder(data / "face" / "train", 40, ext=".jpg")
    make_face_folder(data / "face" / "val", 20, seed=1)
    ck = tiny_checkpoints(tmp_path / "checkpoints", data)
    from common.history import add_to_history
    for name, metric in (("p1_methodA", "face_score"), ("p2_acgan", "accuracy")):  # two stages each
        recs = [{"checkpoint": f"runs/x/snapshots/step_{s:07d}.pt", "fid": f, metric: 0.5} for s, f in ((10, 60.0), (20, 50.0))]
        add_to_history(ck / "logs" / name / "history.jsonl", recs[:1], "stage one", 0, ("fid", metric))
        add_to_history(ck / "logs" / name / "history.jsonl", recs[1:], "stage two", 10, ("fid", metric))
    md, out = tmp_path / "REPORT.md", tmp_path / "report"
    assert make_report.main(["--data", str(data), "--checkpoints", str(ck), "--md", str(md), "--out", str(out),
                             "--fast"]) == 0
    text = md.read_text()
    (Path("/tmp") / "fast_report.md").write_text(text)
    for heading in ("# Report", "## Problem 1", "## Problem 2", "## Problem 3", "FAST MODE", "commit:", "machine:"):
        assert heading in text, heading
    # every linked figure exists
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 7
    for link in links:
        assert (md.parent / link).is_file(), link
    assert text.count("### Training history") == 2 and "| stage two | 30-30 | 1 | 50.00 | 10.00 |" in text
    for name in ("p1/history_A.png", "p2/history_acgan.png", "p1/first32_A.png", "p1/first32_B.png", "p2/grid_diffusion.png", "p2/reverse_process.png",
                 "p3/tsne_mnistm_usps_target.png"):
        assert (out / name).is_file(), name
    # measured numbers in the P1 table (FID is a float, face score a percentage); IS explains itself
    row_a = next(ln for ln in text.splitlines() if ln.startswith("| A |"))
    assert re.search(r"\| \d+\.\d\d \|", row_a) and re.search(r"\d+\.\d %", row_a)
    assert "not available" in row_a or re.search(r"\d\.\d{3} \+- ", row_a)
    rows_b = [ln for ln in text.splitlines() if ln.startswith("| B")]  # the default (best of 2) and the plain G
    assert [ln.split(" | ")[0] for ln in rows_b] == ["| B (best of 2 by its D, default)", "| B, plain G (`--candidates 1`)"]
    assert all(re.search(r"\| \d+\.\d\d \|", ln) for ln in rows_b)  # (a tiny untrained G draws near-flat images)
    assert "print(model) of methods A and B" in text and "Generator(" in text
    assert "| diffusion |" in text and "real mnistm train" in text
    assert "mnistm->usps" in text or "mnistm → usps" in text or "usps" in text


def test_make_report_bad_paths_are_one_line_errors(tmp_path):
    import make_report

    from common.errors import UserError
    with pytest.raises(UserError, match="data folder not found"):
        make_report.main(["--data", str(tmp_path / "nope"), "--fast"])


def test_p1_discussion_names_a_winner_only_when_fid_differs():
    import make_report
    real = {"fid": 14.15, "face": 77.0}
    tie = make_report.discuss_p1({"A": {"fid": 33.25, "face": 76.0}, "B": {"fid": 33.17, "face": 85.1}}, real)
    assert "about the same FID (A 33.25, B 33.17)" in tie and "lower FID" not in tie
    assert "Method B has the higher face score (85.1 % against 76.0 %)" in tie and "disagree" not in tie
    apart = make_report.discuss_p1({"A": {"fid": 35.4, "face": 76.2}, "B": {"fid": 48.8, "face": 83.5}}, real)
    assert "Method A has the lower FID (35.4 against 48.8)" in apart and "disagree" in apart


def test_only_keeps_the_other_sections_of_the_existing_report(tmp_path):
    """--only regenerates some sections; kept_sections hands back the others verbatim (not the header or Notes)."""
    import make_report
    md = tmp_path / "REPORT.md"
    md.write_text("# Report\n\n- date: x\n\n## Problem 1: faces\n\nFID 33\n\n### sub\n\n| a |\n\n"
                  "## Problem 2: digits\n\nacc 98 %\n\n## Problem 3: uda\n\n97 %\n\n## Notes\n- n\n")
    kept = make_report.kept_sections(md)
    assert set(kept) == {"p1", "p2", "p3"}
    assert kept["p1"] == "## Problem 1: faces\n\nFID 33\n\n### sub\n\n| a |\n"
    assert kept["p3"] == "## Problem 3: uda\n\n97 %\n" and "Notes" not in kept["p3"]
    assert make_report.kept_sections(tmp_path / "none.md") == {}
