"""``sarseg bench ssl``: paired differences and their verdicts (better or worse only when the 95% interval
excludes 0), the shared data's tasks, and the whole protocol on your own dataset and on the shared data."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sarseg import phantom
from sarseg.bench_ssl import (INITS, LIDC_POOL, LIDC_TEST, PROFILES, Profile, crossed_interval, dataset_tasks, markdown, paired,
                              plot, run, shared_tasks, summarise)
from sarseg.core.errors import BadInput
from sarseg.data import parse_sources
from sarseg.io import read_image
from cli_helpers import assert_bad, run_cli


def rows(init: str, dices: list[float], step: int = 100, cases: int = 1) -> list[dict]:
    """One row per seed (and test case: seed-major, ``cases`` cases per seed)."""
    return [{"init": init, "dataset": "brats", "region": "tumor core", "labeled_cases": 1, "step": step,
             "seed": i // cases, "case": f"case{i % cases}", "dice": d} for i, d in enumerate(dices)]


def verdicts(table: list[dict]) -> dict[str, str]:
    return {s["init"]: s["vs_scratch"] for s in table}


def test_better_and_worse_need_the_paired_interval_to_exclude_zero() -> None:
    table = summarise(rows("scratch", [0.40, 0.42, 0.44]) + rows("sar", [0.60, 0.61, 0.62])
                      + rows("restoration", [0.20, 0.21, 0.22]) + rows("sar_no_adv", [0.30, 0.45, 0.60]))
    assert verdicts(table) == {"scratch": "-", "sar": "better", "restoration": "worse", "sar_no_adv": "no difference"}
    scratch = next(s for s in table if s["init"] == "scratch")
    assert abs(scratch["mean"] - 0.42) < 1e-9 and scratch["n"] == 3


def test_paired_differences_match_seed_and_case() -> None:
    """Known answers, one seed: differences 0.1, 0.2, 0.3 over three cases (mean 0.2, sd 0.1,
    t(0.975, 2) = 4.3027 -> half-width 0.2484)."""
    base = rows("scratch", [0.5, 0.1, 0.7], cases=3)
    sar = rows("sar", [0.6, 0.3, 1.0], cases=3)
    diff = paired(list(reversed(sar)), base)  # order does not matter, seed and case do
    assert diff["n"] == 3
    assert diff["mean"] == pytest.approx(0.2) and diff["std"] == pytest.approx(0.1)
    assert (diff["low"], diff["high"]) == (pytest.approx(0.2 - 0.24841, abs=1e-5), pytest.approx(0.2 + 0.24841, abs=1e-5))
    assert diff["verdict"] == "no difference"
    tight = paired(rows("sar", [0.61, 0.29, 0.81, 0.41], cases=4), rows("scratch", [0.5, 0.1, 0.7, 0.3], cases=4))
    assert tight["mean"] == pytest.approx(0.13) and tight["low"] > 0 and tight["verdict"] == "better"  # +0.11, +0.19, +0.11, +0.11
    gap = paired(rows("sar", [0.6, 0.3, 1.0], cases=2), rows("scratch", [0.5, 0.1, 0.7, 0.3], cases=2))
    assert gap["n"] == 2 and gap["mean"] == pytest.approx(0.2)  # case1 lacks seed 1's pair: the case is left out
    partial_seed = paired(rows("sar", [0.6] * 7, cases=3), rows("scratch", [0.5] * 9, cases=3))  # seed 2 has one case
    assert partial_seed["n"] == 6 and partial_seed["mean"] == pytest.approx(0.1)  # seed 2 left out, not two cases
    assert paired(rows("sar", [0.3], cases=2), base)["verdict"] == "n/a (fewer than 2 pairs)"


def test_pairs_that_share_a_seed_are_not_counted_as_independent() -> None:
    """3 seeds x 50 cases whose differences move with the seed (+0.06, -0.01, +0.02; each case adds a tiny
    offset of its own): taken as 150 independent pairs the interval would exclude 0; with seeds as a factor
    it is the t interval over the three seed means (df 2), and it does not."""
    offsets, cases = (0.06, -0.01, 0.02), 50
    wiggle = [0.002 * np.sin(c) for c in range(cases)]
    base = rows("scratch", [0.5] * 3 * cases, cases=cases)
    sar = rows("sar", [0.5 + offsets[i // cases] + wiggle[i % cases] for i in range(3 * cases)], cases=cases)
    diff = paired(sar, base)
    assert diff["n"] == 150 and diff["verdict"] == "no difference"
    independent = stats.t.ppf(0.975, 149) * diff["std"] / 150 ** 0.5
    assert diff["mean"] - independent > 0  # the pairs-as-independent interval's verdict would be "better"
    seed_means = [offset + statistics.mean(wiggle) for offset in offsets]
    over_seeds = stats.t.ppf(0.975, 2) * statistics.stdev(seed_means) / 3 ** 0.5
    assert diff["high"] - diff["mean"] == pytest.approx(over_seeds, rel=0.05)


def test_crossed_interval_known_answers() -> None:
    """By hand: seeds x cases grids, mean squares (seed, case, residual), var(mean) = sum of kept terms / 9."""
    truncated = np.array([[.1, .3, .2], [.2, .1, .6], [0, .2, .4]])  # MS 0.01, 0.07, 0.025: the seed term is below 0
    half = stats.t.ppf(0.975, 2) * (0.07 / 9) ** 0.5  # only MS_case, 2 df
    assert crossed_interval(truncated) == pytest.approx((0.7 / 3 - half, 0.7 / 3 + half))
    both = np.array([[0, .1, .3], [.2, .3, .4], [.1, .1, .5]])  # MS 0.02111, 0.07444, 0.00611: both terms kept
    ms = np.array([0.19 / 9, 0.67 / 9, 0.055 / 9])
    variance = (ms[0] + ms[1] - ms[2]) / 9
    df = variance ** 2 / ((ms[0] / 9) ** 2 / 2 + (ms[1] / 9) ** 2 / 2 + (ms[2] / 9) ** 2 / 4)  # Satterthwaite, about 2.66
    half = stats.t.ppf(0.975, df) * variance ** 0.5
    assert crossed_interval(both) == pytest.approx((2 / 9 - half, 2 / 9 + half))
    one_seed = np.array([[0.1, 0.2, 0.3]])
    assert crossed_interval(one_seed) == pytest.approx((0.2 - 0.24841, 0.2 + 0.24841), abs=1e-5)  # the one-sample t
    assert crossed_interval(np.full((3, 4), 0.05)) == (pytest.approx(0.05), pytest.approx(0.05))  # no spread at all


def test_tasks_that_share_case_names_are_separate_cases() -> None:
    """Two folds of one dataset both test a case named case0: two columns of the grid, not one pair overwritten."""
    def fold(init: str, task: str, dices: list[float]) -> list[dict]:
        return [{**r, "task": task} for r in rows(init, dices, cases=1)]

    base = fold("scratch", "fold0", [0.5, 0.5]) + fold("scratch", "fold1", [0.5, 0.5])
    sar = fold("sar", "fold0", [0.6, 0.7]) + fold("sar", "fold1", [0.4, 0.5])
    diff = paired(sar, base)
    assert diff["n"] == 4 and diff["mean"] == pytest.approx(0.05)


def test_table_gives_both_baselines_differences() -> None:
    table = summarise(rows("scratch", [0.40, 0.42, 0.44]) + rows("restoration", [0.50, 0.50, 0.50])
                      + rows("sar", [0.50, 0.53, 0.56]))
    sar = next(s for s in table if s["init"] == "sar")
    assert (sar["vs_scratch"], sar["vs_restoration"]) == ("better", "no difference")
    assert sar["diff_restoration"]["mean"] == pytest.approx(0.03) and sar["diff_restoration"]["n"] == 3
    assert ("| brats | tumor core | 1 | 100 | sar | 0.530 ± 0.024 (3) | better | +0.110 ± 0.010 [+0.085, +0.135] (3) | "
            "no difference | +0.030 ± 0.030 [-0.045, +0.105] (3) |") in markdown(table)
    restoration = next(s for s in table if s["init"] == "restoration")
    assert restoration["vs_restoration"] == "-" and restoration["diff_restoration"] is None


def test_each_step_is_compared_with_scratch_at_the_same_step() -> None:
    table = summarise(rows("scratch", [0.1, 0.1, 0.1], 100) + rows("sar", [0.3, 0.3, 0.3], 100)
                      + rows("scratch", [0.5, 0.5, 0.5], 300) + rows("sar", [0.3, 0.3, 0.3], 300))
    by_step = {s["step"]: s["vs_scratch"] for s in table if s["init"] == "sar"}
    assert by_step == {100: "better", 300: "worse"}
    assert "| brats | tumor core | 1 | 300 | sar | 0.300 ± 0.000 (3) | worse |" in markdown(table)


def nnunet_dataset(folder: Path, cases: list[dict[str, str]]) -> Path:
    """An nnU-Net v2 training folder (what SARPretrain writes) holding the phantoms' MR channel."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for i, case in enumerate(cases):
        shutil.copy(case["mr"], folder / "imagesTr" / f"case{i:03d}_0000.nii.gz")
        shutil.copy(case["label"], folder / "labelsTr" / f"case{i:03d}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "rim": 1, "core": 2},
                                                     "numTraining": len(cases), "file_ending": ".nii.gz"}), encoding="utf-8")
    return folder / "dataset.json"


def test_own_dataset_gives_dice_against_labeled_cases(tmp_path: Path, capsys) -> None:
    """The whole protocol on a small dataset: pretraining on every channel file, fine-tuning on the first
    1 and 2 cases, scoring on the held-out last case, both plots."""
    dataset = nnunet_dataset(tmp_path / "data", phantom.write_cases(tmp_path / "phantoms", 4))
    sources, tasks = dataset_tasks(dataset, test_cases=1, patch_size=(32, 32, 16))
    assert [(s.name, len(s.paths)) for s in parse_sources(sources)] == [("mr", 4)]  # every case's channel, unlabeled
    (task,) = tasks
    assert len(task.train) == 3 and task.test[0].label.endswith("case003.nii.gz")
    assert task.labels.names == ("label 1", "label 2")
    profile = Profile(pretrain_steps=3, finetune_checkpoints=(2, 4), seeds=(0, 1), labeled_cases=(1, 2, 5),
                      pretrain={"batch_size": 2})
    rows = run(sources, tasks, tmp_path / "out", profile, torch.device("cpu"), log=lambda _: None,
               inits={"scratch": None, "sar": {}})
    assert {(r["init"], r["labeled_cases"], r["seed"], r["step"]) for r in rows} == {
        (i, k, s, t) for i in ("scratch", "sar") for k in (1, 2) for s in (0, 1) for t in (2, 4)}  # 5 > 3 cases: skipped
    for init, k, seed in (("scratch", 1, 0), ("sar", 2, 1)):  # each row is the Dice `sarseg evaluate` gives
        model = tmp_path / "out" / "finetuned" / f"{init}-{task.name}-k{k}-seed{seed}"
        segmentation, report = tmp_path / f"{init}{k}{seed}.nii.gz", tmp_path / f"{init}{k}{seed}.json"
        assert run_cli(capsys, ["segment", "--model", model, "--input", *task.test[0].images, "--output", segmentation])[0] == 0
        assert run_cli(capsys, ["evaluate", "--pred", segmentation, "--ref", task.test[0].label, "--model", model,
                                "--json", report])[0] == 0
        scored = {r["name"]: r["dice"] for r in json.loads(report.read_text())["labels"]}
        assert scored == {r["region"]: r["dice"] for r in rows if (r["init"], r["labeled_cases"], r["seed"], r["step"])
                          == (init, k, seed, 4)} and len(scored) == 2
    assert json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8")) == rows
    written = plot(summarise(rows), tmp_path / "out")
    assert [p.name for p in written] == ["dice_vs_steps.png", "dice_vs_cases.png", "gain_vs_cases.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    again = run(sources, tasks, tmp_path / "out", profile, torch.device("cpu"), log=lambda _: None, inits={"sar": {}})
    assert again == [r for r in rows if r["init"] == "sar"]  # same settings: pretrained model reused, same results
    with pytest.raises(BadInput, match="pretrained with other settings or data"):  # not silently reused
        run(sources, tasks, tmp_path / "out", profile, torch.device("cpu"), log=lambda _: None, inits={"sar": {"lambda_adv": 0.0}})


def test_dataset_needs_a_case_to_train_on(tmp_path: Path) -> None:
    dataset = nnunet_dataset(tmp_path / "data", phantom.write_cases(tmp_path / "phantoms", 1))
    with pytest.raises(BadInput, match="holds 1 labeled case"):
        dataset_tasks(dataset, test_cases=1)


def test_without_a_scratch_run_there_is_no_verdict() -> None:
    assert verdicts(summarise(rows("sar", [0.5, 0.6, 0.7]))) == {"sar": "n/a (no scratch run)"}
    assert "| n/a (no restoration run) | - |" in markdown(summarise(rows("sar", [0.5, 0.6, 0.7])))


def test_more_labeled_cases_than_the_pool_fails_before_pretraining(tmp_path: Path, capsys) -> None:
    dataset = nnunet_dataset(tmp_path / "data", phantom.write_cases(tmp_path / "phantoms", 2))
    rc, err = run_cli(capsys, ["bench", "ssl", "--dataset", dataset, "--labeled-cases", "1", "3", "--out", tmp_path / "out"])
    assert_bad(rc, err, "--labeled-cases", "each K must lie in 1..1")
    assert not (tmp_path / "out").exists()


def test_tasks_pick_among_the_shared_data_only(tmp_path: Path, capsys) -> None:
    dataset = nnunet_dataset(tmp_path / "data", phantom.write_cases(tmp_path / "phantoms", 2))
    rc, err = run_cli(capsys, ["bench", "ssl", "--dataset", dataset, "--tasks", "lidc", "--out", tmp_path / "out"])
    assert_bad(rc, err, "--tasks", "--dataset makes one task of its cases")
    rc, err = run_cli(capsys, ["bench", "ssl", "--dataset", dataset, "--seeds", "0", "-1", "--out", tmp_path / "out"])
    assert_bad(rc, err, "--seeds", "seeds are 0 or more (got -1)")
    assert not (tmp_path / "out").exists()


def test_shared_data_profile_lives_in_benchmarks(shared_data: Path, tmp_path: Path) -> None:
    """``benchmarks/ssl_shared.py``: the shared cases' tasks (BraTS cropped to the brain, TCGA-GBM), one fold
    for the quick profile, both for the full one; every pretraining glob finds its volumes."""
    import glob
    import importlib.util

    spec = importlib.util.spec_from_file_location("ssl_shared", Path(__file__).resolve().parents[1] / "benchmarks" / "ssl_shared.py")
    ssl_shared = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ssl_shared)
    sources, tasks = ssl_shared.shared_tasks(shared_data, tmp_path, ssl_shared.FOLDS["full"])
    assert [(t.name, len(t.train), len(t.test), t.modalities) for t in tasks] == [
        ("brats_fold0", 1, 1, ("mr", "mr")), ("tcga_fold0", 1, 1, ("mr",)),
        ("brats_fold1", 1, 1, ("mr", "mr")), ("tcga_fold1", 1, 1, ("mr",))]
    assert all(glob.glob(s.split("=", 1)[1]) for s in sources)
    brats = read_image(tasks[0].train[0].images)
    assert brats.channels == 2 and Path(tasks[0].train[0].label).parent == tmp_path / "cases"
    assert all(n < 240 for n in brats.geometry.size)  # cropped to the brain
    with pytest.raises(BadInput, match="does not hold the shared real cases"):
        ssl_shared.shared_tasks(tmp_path, tmp_path, 1)


def test_shared_data_tasks(shared_data: Path) -> None:
    """BraTS 2018: the first 8 cases (by name) are the pool, CBICA_AME_1 first, the last 4 the test cases, whatever k; LIDC: the
    last 50 VOIs test, 128 from other patients the pool; every pretraining glob finds volumes."""
    import glob

    sources, (brats, lidc) = shared_tasks(shared_data, PROFILES["full"].shared)
    assert (brats.labeled_cases, lidc.labeled_cases) == ((1, 2, 4, 8), (8, 32, 128))
    assert [Path(c.label).parent.name for c in brats.train] == [  # k = 1: the case chosen on development cases
        "Brats18_CBICA_AME_1", "Brats18_2013_11_1", "Brats18_2013_20_1", "Brats18_2013_23_1", "Brats18_CBICA_ABM_1",
        "Brats18_TCIA01_201_1", "Brats18_TCIA01_378_1", "Brats18_TCIA01_499_1"]
    assert [Path(c.label).parent.name for c in brats.test] == [
        "Brats18_TCIA02_135_1", "Brats18_TCIA02_606_1", "Brats18_TCIA10_628_1", "Brats18_TCIA10_639_1"]  # test, never validation
    assert brats.modalities == ("flair", "t1", "t1c", "t2") and brats.train[0].images[2].endswith("_t1ce.nii.gz")
    assert brats.labels.names == ("whole tumor", "tumor core", "enhancing tumor")
    assert (len(lidc.train), len(lidc.test), lidc.modalities, lidc.patch_size) == (LIDC_POOL, LIDC_TEST, ("ct",), (48, 48, 16))
    patient = {part: {Path(c.label).name.split("_")[0] for c in getattr(lidc, part)} for part in ("train", "test")}
    assert not patient["train"] & patient["test"]
    assert all(Path(c.label).is_file() and Path(c.images[0]).is_file() for c in lidc.train + lidc.test)
    assert all(glob.glob(s.split("=", 1)[1]) for s in sources)
    quick_sources, quick = shared_tasks(shared_data, PROFILES["quick"].shared)
    assert quick_sources == sources and [t.test for t in quick] == [brats.test, lidc.test]  # quick: fewer k, same test
    assert PROFILES["cases"] == dataclasses.replace(PROFILES["quick"], shared=PROFILES["full"].shared)  # quick at every k


def test_shared_data_must_be_there(tmp_path: Path, capsys) -> None:
    rc, err = run_cli(capsys, ["bench", "ssl", "--data", tmp_path, "--out", tmp_path / "out"])
    assert_bad(rc, err, str(tmp_path), "does not hold the shared data")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("profile", ["quick", "gpu", "full"])
def test_protocol_on_shared_data_in_seconds(profile: str, shared_data: Path, tmp_path: Path) -> None:
    """Each profile's settings run through the whole protocol, cut to 2 steps: LIDC only, 2 test VOIs, one CT
    volume to pretrain on; quick with all four initialisations and 2 seeds, the others two."""
    _, (_, lidc) = shared_tasks(shared_data, PROFILES[profile].shared)
    task = dataclasses.replace(lidc, test=lidc.test[:2], labeled_cases=(1, 2))
    settings = dataclasses.replace(PROFILES[profile], pretrain_steps=2, finetune_checkpoints=(1, 2),
                                   seeds=(0, 1) if profile == "quick" else (0,),
                                   pretrain={**PROFILES[profile].pretrain, "batch_size": 2, "eval_cubes": 2})
    inits = INITS if profile == "quick" else {"scratch": None, "restoration": INITS["restoration"]}
    results = run([f"ct={shared_data}/lung_ct/image.nii.gz"], [task], tmp_path, settings, torch.device("cpu"),
                  log=lambda _: None, inits=inits)
    assert len(results) == len(inits) * 2 * len(settings.seeds) * 2 * 2  # k, seeds, steps, test VOIs (one region)
    summary = summarise(results)
    if profile == "quick":
        assert {s["init"] for s in summary} == {"scratch", "restoration", "sar", "sar_scale1_no_adv"}
        assert all(s["diff_scratch"]["n"] == 4 for s in summary if s["init"] != "scratch")  # 2 seeds x 2 VOIs
        written = plot(summary, tmp_path)
        assert [p.name for p in written] == ["dice_vs_steps.png", "dice_vs_cases.png", "gain_vs_cases.png"]
        assert markdown(summary).count("| lidc | tumor |") == len(summary) == 4 * 2 * 2  # inits, k, steps
