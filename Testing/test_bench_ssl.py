"""``sarseg bench ssl``: verdicts (a difference smaller than the seed spread is no difference), and the whole
protocol on your own dataset with the labeled-cases axis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sarseg import phantom
from sarseg.bench_ssl import Profile, dataset_tasks, markdown, plot, run, summarise
from sarseg.core.errors import BadInput
from sarseg.data import parse_sources
from sarseg.io import read_image
from cli_helpers import assert_bad, run_cli


def rows(init: str, dices: list[float], step: int = 100) -> list[dict]:
    return [{"init": init, "dataset": "brats", "region": "tumor core", "labeled_cases": 1, "step": step, "seed": s,
             "dice": d} for s, d in enumerate(dices)]


def verdicts(table: list[dict]) -> dict[str, str]:
    return {s["init"]: s["vs_scratch"] for s in table}


def test_better_and_worse_need_more_than_the_larger_spread() -> None:
    table = summarise(rows("scratch", [0.40, 0.42, 0.44]) + rows("sar", [0.60, 0.61, 0.62])
                      + rows("restoration", [0.20, 0.21, 0.22]) + rows("sar_no_adv", [0.30, 0.45, 0.60]))
    assert verdicts(table) == {"scratch": "-", "sar": "better", "restoration": "worse", "sar_no_adv": "no difference"}
    scratch = next(s for s in table if s["init"] == "scratch")
    assert abs(scratch["mean"] - 0.42) < 1e-9 and scratch["n"] == 3


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
    assert [p.name for p in written] == ["dice_vs_steps.png", "dice_vs_cases.png"]
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


def test_more_labeled_cases_than_the_pool_fails_before_pretraining(tmp_path: Path, capsys) -> None:
    dataset = nnunet_dataset(tmp_path / "data", phantom.write_cases(tmp_path / "phantoms", 2))
    rc, err = run_cli(capsys, ["bench", "ssl", "--dataset", dataset, "--labeled-cases", "1", "3", "--out", tmp_path / "out"])
    assert_bad(rc, err, "--labeled-cases", "each K must lie in 1..1")
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
