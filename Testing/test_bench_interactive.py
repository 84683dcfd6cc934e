"""``sarseg bench interactive`` on phantom-sized data: a tiny promptable model trained for a few steps and
a fixed model, scored on held-back cases of a dataset.json; the summary (Dice after 1, 3 and 5 clicks,
clicks to 0.85 and 0.90) against hand-made rows, and bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarseg import phantom
from sarseg.bench_interactive import markdown, summarise
from sarseg.cli import EXIT_OK
from cli_helpers import assert_bad, run_cli
from test_bench_ssl import nnunet_dataset
from test_finetune import run
from test_model import saved, segmentation_card

pytestmark = pytest.mark.usefixtures("one_thread")


def row(name: str, curve: list[float], fixed: float | None = None) -> dict:
    return {"dataset": name, "case": "c", "dice_per_click": curve, "fixed_dice": fixed,
            **{f"clicks_to_{t:.2f}": next((i + 1 for i, d in enumerate(curve) if d >= t), None) for t in (0.85, 0.9)}}


def test_the_summary_counts_clicks_as_interactive_benchmarks_do() -> None:
    rows = [row("a", [0.5, 0.86, 0.88, 0.91, 0.92], 0.8), row("a", [0.9, 0.92, 0.93, 0.93, 0.95], 0.7),
            row("b", [0.1, 0.2, 0.3, 0.4, 0.5])]
    a, b = summarise(rows, 5)
    assert (a["dice_1"], a["dice_3"], a["dice_5"]) == pytest.approx((0.7, 0.905, 0.935))
    assert a["noc_0.85"] == 1.5 and a["reached_0.85"] == 2  # 2 clicks and 1 click
    assert a["noc_0.90"] == 2.5 and a["reached_0.90"] == 2  # 4 clicks and 1 click
    assert b["noc_0.85"] == 5 and b["reached_0.85"] == 0 and b["fixed_dice"] is None  # never: counted as the 5 clicks
    assert a["fixed_dice"] == pytest.approx(0.75)
    table = markdown([a, b], 5)
    assert "| a | 2 | 0.700 | 0.905 | 0.935 | 1.5 (2/2) | 2.5 (2/2) | 0.750 |" in table
    assert "| b | 1 | 0.100 | 0.300 | 0.500 | 5.0 (0/1) | 5.0 (0/1) | - |" in table
    assert "Dice, 5 clicks" not in markdown(summarise([row("c", [0.5, 0.6, 0.7])], 3), 3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return nnunet_dataset(folder / "training", phantom.write_cases(folder / "phantoms", 5))


@pytest.fixture(scope="module")
def promptable(tmp_path_factory, dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("click") / "model"
    rc, _, err = run("finetune", "--init", "scratch", "--dataset", dataset, "--max-cases", "3", "--out", out,
                     "--preset", "tiny", "--steps", "4", "--promptable", "--progress", "json")
    assert rc == EXIT_OK, err
    return out


def test_bench_on_held_back_cases(promptable: Path, dataset: Path, tmp_path: Path) -> None:
    fixed = saved(tmp_path / "fixed", segmentation_card())[0]  # one channel, binary: random weights
    out = tmp_path / "bench"
    rc, stdout, err = run("bench", "interactive", "--model", promptable, "--fixed", fixed, "--dataset", dataset,
                          "--test-cases", "2", "--clicks", "5", "--out", out, "--device", "cpu")
    assert rc == EXIT_OK, err
    results = json.loads((out / "results.json").read_text())
    rows = results["cases"]
    assert [r["case"] for r in rows] == ["case003", "case004"] and results["clicks"] == 5
    for r in rows:
        curve = r["dice_per_click"]
        assert len(curve) == 5 and all(0.0 <= d <= 1.0 for d in curve)
        for t in ("0.85", "0.90"):
            reached = [i + 1 for i, d in enumerate(curve) if d >= float(t)]
            assert r[f"clicks_to_{t}"] == (reached[0] if reached else None)
    (summary,) = results["summary"]
    assert summary["dice_1"] == pytest.approx(np.mean([r["dice_per_click"][0] for r in rows]))
    assert summary["dataset"] == "training MR" and summary["cases"] == 2
    assert (out / "results.md").read_text() in stdout and (out / "dice_vs_clicks.png").stat().st_size > 1000
    # the fixed model's Dice, computed apart from the bench: sarseg segment, then the label's voxels
    case = dataset.parent / "imagesTr" / "case004_0000.nii.gz"
    rc, _, err = run("segment", "--model", fixed, "--input", case, "--output", tmp_path / "fixed.nii.gz")
    assert rc == EXIT_OK, err
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "fixed.nii.gz"))) > 0
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.parent / "labelsTr" / "case004.nii.gz"))) > 0
    expected = 2 * (predicted & label).sum() / (predicted.sum() + label.sum())
    assert rows[1]["fixed_dice"] == pytest.approx(expected)


def test_bench_options_are_checked(promptable: Path, dataset: Path, tmp_path: Path, capsys) -> None:
    base = ["bench", "interactive", "--model", promptable, "--dataset", dataset, "--out", tmp_path / "b"]
    rc, err = run_cli(capsys, [*base, "--test-cases", "9"])
    assert_bad(rc, err, "--test-cases", "must lie in 1..5")
    rc, err = run_cli(capsys, [*base, "--channel", "CT"])
    assert_bad(rc, err, "--channel", "'CT' is not a channel", "MR")
    rc, err = run_cli(capsys, [*base, "--values", "1,x"])
    assert_bad(rc, err, "--values", "not a list of label values")
    rc, err = run_cli(capsys, [*base, "--values", "7", "--test-cases", "1"])  # each case skipped says so first
    assert rc == 2 and err.splitlines()[-1] == "sarseg: error: --values: no held-back case holds a voxel of the target (label values [7])"
    fixed = saved(tmp_path / "fixed", segmentation_card())[0]
    rc, err = run_cli(capsys, ["bench", "interactive", "--model", fixed, "--dataset", dataset, "--out", tmp_path / "c"])
    assert_bad(rc, err, str(fixed), "is not a promptable model")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
