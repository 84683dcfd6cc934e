"""``dataset.json`` (``sarseg.core.datasets``): one reader and one writer for the Decathlon and nnU-Net v2
layouts, the same meaning for pretraining and fine-tuning, and every hostile file refused with
``BadInput`` (exit 2, nothing written), never a traceback."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarseg import phantom
from sarseg.config import PretrainConfig
from sarseg.core import datasets
from sarseg.core.datasets import DECATHLON, NNUNET, Case, Dataset, ImageRef, nnunet_case
from sarseg.core.errors import BadInput
from sarseg.data import LoadVolume, items, parse_sources
from sarseg.finetune import cases_from_dataset
from sarseg.infer import normalise_channels
from sarseg.io import read_image
from cli_helpers import assert_bad, run_cli

SCHEME = {"mode": "classes", "names": ["rim", "core"], "values": [[1], [2]], "paint": [1, 2],
          "colors": [[0.9, 0.3, 0.2], [0.3, 0.75, 0.35]]}


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def nnunet_folder(root: Path, train: int = 2, test: int = 1, channels: int = 2) -> Dataset:
    """Empty placeholder files in the nnU-Net v2 layout (the reader checks names, not contents)."""
    cases = [nnunet_case(root, f"c{i}", channels) for i in range(train)]
    cases += [nnunet_case(root, f"t{i}", channels, labeled=False) for i in range(test)]
    for case in cases:
        for file in [r.path for r in case.images] + ([case.label] if case.label else []):
            touch(Path(file))
    return Dataset(NNUNET, ("T2", "ADC")[:channels], tuple(cases), {"background": 0, "zone": 1, "both": (1, 2)},
                   SCHEME, name="prostate", description="two channels")


def decathlon_folder(root: Path, train: int = 2, test: int = 1) -> Dataset:
    cases = [Case(f"BRATS_{i:03d}", tuple(ImageRef(touch(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz"), k) for k in range(2)),
                  touch(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz")) for i in range(train)]
    cases += [Case(f"BRATS_{i:03d}", tuple(ImageRef(touch(root / "imagesTs" / f"BRATS_{i:03d}.nii.gz"), k) for k in range(2)))
              for i in range(train, train + test)]
    return Dataset(DECATHLON, ("FLAIR", "T1w"), tuple(cases), {"background": 0, "edema": 1, "tumor": 2}, name="brats")


# ------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("make", [nnunet_folder, decathlon_folder], ids=["nnunetv2", "decathlon"])
def test_writer_then_reader_gives_the_same_dataset(tmp_path: Path, make) -> None:
    root = tmp_path.resolve()
    dataset = make(root)
    path = datasets.write(root / "dataset.json", dataset, extra={"sar_init_model": "m"})
    assert datasets.read(path) == dataset
    assert json.loads(path.read_text())["sar_init_model"] == "m"
    assert not [p for p in root.iterdir() if p.name.startswith(".dataset.json")]  # atomic: no temporary left


def test_written_files_follow_each_layout(tmp_path: Path) -> None:
    nn = json.loads(datasets.write(tmp_path / "a" / "dataset.json", nnunet_folder(tmp_path / "a")).read_text())
    assert nn["channel_names"] == {"0": "T2", "1": "ADC"} and nn["numTraining"] == 2 and nn["file_ending"] == ".nii.gz"
    assert nn["labels"] == {"background": 0, "zone": 1, "both": [1, 2]} and nn["sar_label_scheme"] == SCHEME
    dec = json.loads(datasets.write(tmp_path / "b" / "dataset.json", decathlon_folder(tmp_path / "b")).read_text())
    assert dec["modality"] == {"0": "FLAIR", "1": "T1w"} and dec["labels"] == {"0": "background", "1": "edema", "2": "tumor"}
    assert dec["training"][1] == {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}
    assert dec["test"] == ["./imagesTs/BRATS_002.nii.gz"] and (dec["numTraining"], dec["numTest"]) == (2, 1)


def test_pretraining_takes_every_channel_of_every_case_and_finetuning_the_labeled_ones(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    path = datasets.write(root / "dataset.json", nnunet_folder(root))
    sources = parse_sources([str(path)])
    assert [(s.name, len(s.paths), s.channels) for s in sources] == [("t2", 3, ()), ("adc", 3, ())]
    assert sources[1].paths[2] == str(root / "imagesTs" / "t0_0001.nii.gz")
    named = parse_sources([f"mr={path}"])  # a given name joins every channel into one source
    assert [(s.name, len(s.paths)) for s in named] == [("mr", 6)]
    cases, channels = cases_from_dataset(path)
    assert channels == ("T2", "ADC") and [c.label for c in cases] == [str(root / "labelsTr" / f"c{i}.nii.gz") for i in (0, 1)]
    assert cases[1].images == (str(root / "imagesTr" / "c1_0000.nii.gz"), str(root / "imagesTr" / "c1_0001.nii.gz"))


def write_4d(path: Path, channels: list[np.ndarray]) -> None:
    volumes = []
    for array in channels:
        volume = sitk.GetImageFromArray(array.astype(np.float32))
        volume.SetSpacing(phantom.SPACING_XYZ)
        volumes.append(volume)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))


def test_a_decathlon_4d_file_gives_the_same_channels_to_pretraining_and_finetuning(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    images, label = phantom.make_case(1, (24, 48, 48))
    write_4d(root / "imagesTr" / "p_001.nii.gz", [images["mr"], images["ct"]])
    write_4d(root / "imagesTs" / "p_002.nii.gz", [images["mr"] * 2, images["ct"] + 5])
    touch(root / "labelsTr" / "p_001.nii.gz")  # fine-tuning's label reading is not what is compared here
    (root / "dataset.json").write_text(json.dumps({
        "name": "phantom", "modality": {"0": "MR", "1": "CT"}, "labels": {"0": "background", "1": "rim", "2": "core"},
        "training": [{"image": "./imagesTr/p_001.nii.gz", "label": "./labelsTr/p_001.nii.gz"}],
        "test": ["./imagesTs/p_002.nii.gz"]}))

    sources = parse_sources([str(root / "dataset.json")])
    assert [(s.name, s.channels) for s in sources] == [("mr", (0, 0)), ("ct", (1, 1))]  # training and test image
    table = PretrainConfig().normalisation
    pretrained = {item["name"]: LoadVolume(table)(item)["volume"][0].numpy() for item in items(sources)[::2]}

    (case,), channels = cases_from_dataset(root / "dataset.json")
    assert case.images == (str(root / "imagesTr" / "p_001.nii.gz"),)
    finetuned = normalise_channels(read_image(case.images), channels, table)
    assert np.array_equal(finetuned[0], pretrained["mr"]) and np.array_equal(finetuned[1], pretrained["ct"])
    assert not np.array_equal(pretrained["mr"], pretrained["ct"])


def test_pretraining_a_decathlon_4d_dataset_runs(tmp_path: Path, capsys) -> None:
    """Pretraining used to refuse 4D files; through a dataset.json each channel is a named source."""
    root = tmp_path.resolve() / "data"
    cases = []
    for i in range(2):
        images, _ = phantom.make_case(i, (24, 48, 48))
        write_4d(root / "imagesTr" / f"p_{i}.nii.gz", [images["mr"], images["pet"]])
        cases.append(f"./imagesTr/p_{i}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MR", "1": "PET"}, "training": [], "test": cases}))
    (tmp_path / "config.json").write_text(json.dumps({"eval_cubes": 8, "pool_size": 2}))
    rc, err = run_cli(capsys, ["pretrain", "--data", root / "dataset.json", "--preset", "tiny", "--steps", "2",
                               "--config", tmp_path / "config.json",
                               "--batch-size", "2", "--workers", "0", "--progress", "json", "--device", "cpu", "--out", tmp_path / "model"])
    assert rc == 0, err
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["sources"] == ["mr", "pet"] and meta["architecture"]["sources"] == 2


# ------------------------------------------------------------------------------------------ hostile input

def read_bad(path: Path, *problems: str) -> str:
    with pytest.raises(BadInput) as caught:
        datasets.read(path)
    assert caught.value.what == str(path)
    for problem in problems:
        assert problem.lower() in str(caught.value).lower(), str(caught.value)
    return str(caught.value)


def decathlon_json(root: Path, **changes) -> Path:
    dataset = decathlon_folder(root)
    path = datasets.write(root / "dataset.json", dataset)
    meta = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(meta))
    return path


def test_entries_outside_the_dataset_folder_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    outside = touch(tmp_path / "secret.nii.gz")
    path = decathlon_json(root, test=[outside])
    read_bad(path, "test[0] is an absolute path")
    decathlon_json(root, test=["../secret.nii.gz"])
    read_bad(path, "test[0]", "leads outside the dataset's folder")
    decathlon_json(root, test=["C:\\data\\x.nii.gz"])
    read_bad(path, "absolute path")
    (root / "imagesTs" / "link.nii.gz").symlink_to(outside)
    decathlon_json(root, test=["imagesTs/link.nii.gz"])
    read_bad(path, "leads outside")
    decathlon_json(root, test=["imagesTs/../imagesTs/BRATS_002.nii.gz"])  # '..' that stays inside is fine
    assert datasets.read(path).cases[-1].images[0].path == str((root / "imagesTs" / "BRATS_002.nii.gz").resolve())


def test_nnunet_folders_and_files_linked_from_outside_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    path = datasets.write(root / "dataset.json", nnunet_folder(root, test=0))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    touch(elsewhere / "x_0000.nii.gz")
    (root / "imagesTs").symlink_to(elsewhere)
    read_bad(path, "imagesTs", "leads outside")
    (root / "imagesTs").unlink()
    (root / "imagesTr" / "c1_0001.nii.gz").unlink()
    (root / "imagesTr" / "c1_0001.nii.gz").symlink_to(elsewhere / "x_0000.nii.gz")
    read_bad(path, "case 'c1'", "leads outside")


@pytest.mark.parametrize("changes, problems", [
    ({"training": "imagesTr"}, ["field 'training' must be an array (got a string)"]),
    ({"training": [["./imagesTr/BRATS_000.nii.gz"]]}, ["training[0] must be an object (got an array)"]),
    ({"training": [{"image": "./imagesTr/BRATS_000.nii.gz"}]}, ["training[0].label is missing"]),
    ({"training": [{"image": None, "label": "x"}]}, ["training[0].image must be a string (got null)"]),
    ({"training": [{"image": 3, "label": "x"}]}, ["training[0].image must be a string (got a number)"]),
    ({"modality": None}, ["field 'modality' must be an object (got null)"]),
    ({"modality": {}}, ["names no channel"]),
    ({"modality": {"1": "MR"}}, ["'modality' must be keyed by channel numbers 0..0"]),
    ({"modality": {"a": "MR", "1": "CT"}}, ["keyed by channel numbers"]),
    ({"modality": {"0": 7}}, ["modality['0'] must be a string (got a number)"]),
    ({"labels": {"one": "tumor"}}, ["'labels' must be keyed by label values"]),
    ({"labels": {"1": "tumor", "2": "tumor"}}, ["names 'tumor' twice"]),
    ({"labels": ["background"]}, ["field 'labels' must be an object (got an array)"]),
    ({"test": [True]}, ["test[0] must be a string (got true/false)"]),
    ({"test": [{"img": "x"}]}, ["test[0].image is missing"]),
    ({"sar_label_scheme": "brats"}, ["field 'sar_label_scheme' must be an object (got a string)"]),
    ({"name": 5}, ["field 'name' must be a string"]),
    ({"test": ["imagesTs/\x00.nii.gz"]}, ["is not a file name"]),
    ({"test": ["imagesTs/" + "x" * 5000]}, ["test[0]"]),
])
def test_wrong_decathlon_fields_are_named(tmp_path: Path, changes: dict, problems: list[str]) -> None:
    read_bad(decathlon_json(tmp_path, **changes), *problems)


def nnunet_json(root: Path, **changes) -> Path:
    path = datasets.write(root / "dataset.json", nnunet_folder(root))
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


@pytest.mark.parametrize("changes, problems", [
    ({"channel_names": ["T2"]}, ["field 'channel_names' must be an object (got an array)"]),
    ({"channel_names": {"0": "T2", "2": "ADC"}}, ["keyed by channel numbers 0..1"]),
    ({"channel_names": {"0": " "}}, ["empty channel name"]),
    ({"labels": {"background": "0"}}, ["labels['background'] must be a label value"]),
    ({"labels": {"zone": -1}}, ["must be a label value, a whole number >= 0"]),
    ({"labels": {"zone": True}}, ["must be a label value"]),
    ({"labels": {"zone": []}}, ["lists no label value"]),
    ({"labels": {"zone": [1, "2"]}}, ["must be a label value"]),
    ({"file_ending": "/../../x"}, ["'file_ending' must be a file ending"]),
    ({"file_ending": 4}, ["'file_ending' must be a string (got a number)"]),
])
def test_wrong_nnunet_fields_are_named(tmp_path: Path, changes: dict, problems: list[str]) -> None:
    read_bad(nnunet_json(tmp_path, **changes), *problems)


def test_missing_files_are_named(tmp_path: Path) -> None:
    path = decathlon_json(tmp_path / "dec")
    (tmp_path / "dec" / "labelsTr" / "BRATS_001.nii.gz").unlink()
    missing = str(tmp_path / "dec" / "./labelsTr/BRATS_001.nii.gz")
    read_bad(path, "training[1].label: label file", missing, "does not exist")
    path = nnunet_json(tmp_path / "nn")
    (tmp_path / "nn" / "labelsTr" / "c0.nii.gz").unlink()
    read_bad(path, "case 'c0': label file", str((tmp_path / "nn").resolve() / "labelsTr" / "c0.nii.gz"))
    touch(tmp_path / "nn" / "labelsTr" / "c0.nii.gz")
    (tmp_path / "nn" / "imagesTs" / "t0_0001.nii.gz").unlink()
    read_bad(path, "case 't0': channel 1 file", "t0_0001.nii.gz does not exist")


def test_unreadable_oversized_and_unknown_files(tmp_path: Path) -> None:
    read_bad(tmp_path / "absent.json", "no such file")
    read_bad(tmp_path, "cannot read dataset.json (it is a folder)")
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(datasets.MAX_BYTES + 1)  # sparse: 64 MiB of zeros, refused before any parsing
    read_bad(big, "larger than 64 MiB")
    for text, problem in [("{", "not valid JSON"), ("[" * 100000, "not valid JSON"), (b"\xff\xfe{", "not valid JSON"),
                          ("[]", "the top level must be an object (got an array)"), ("null", "(got null)"),
                          ('{"labels": {}}', "is neither a Decathlon dataset.json")]:
        bad = tmp_path / "bad.json"
        bad.write_bytes(text if isinstance(text, bytes) else text.encode())
        read_bad(bad, problem)


def test_commands_refuse_a_bad_dataset_and_write_nothing(tmp_path: Path, capsys) -> None:
    path = decathlon_json(tmp_path / "ds", test=["../../etc/passwd"])
    rc, err = run_cli(capsys, ["finetune", "--init", "scratch", "--dataset", path, "--out", tmp_path / "ft"])
    assert_bad(rc, err, str(path), "leads outside the dataset's folder")
    rc, err = run_cli(capsys, ["pretrain", "--data", f"mr={path}", "--out", tmp_path / "pt"])
    assert_bad(rc, err, str(path), "leads outside the dataset's folder")
    assert not (tmp_path / "ft").exists() and not (tmp_path / "pt").exists()


def test_the_writer_refuses_files_outside_its_folder_or_layout(tmp_path: Path) -> None:
    dataset = nnunet_folder(tmp_path / "a")
    with pytest.raises(BadInput, match="not where the nnU-Net v2 layout puts it"):
        datasets.write(tmp_path / "b" / "dataset.json", dataset)
    with pytest.raises(BadInput, match="lies outside the dataset's folder"):
        datasets.write(tmp_path / "b" / "dataset.json", decathlon_folder(tmp_path / "a"))
    with pytest.raises(BadInput, match="one file holding channels 0..1"):
        datasets.write(tmp_path / "a" / "dataset.json", Dataset(DECATHLON, ("a", "b"), dataset.cases[:1]))
    assert not (tmp_path / "b" / "dataset.json").exists() and not (tmp_path / "a" / "dataset.json").exists()


# ------------------------------------------------------------------------------------------ fuzzing

def _nodes(value, trail=()):
    """Every (container, key) position in a JSON tree."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield value, key
            yield from _nodes(item, trail + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield value, index
            yield from _nodes(item, trail + (index,))


def _random_value(rng: random.Random):
    return rng.choice([
        None, True, False, 0, -1, 1, 2**70, 1.5, float("nan"), "", "x", "0", "../../outside.nii.gz", "/etc/passwd",
        "imagesTr/BRATS_000.nii.gz", "\x00", "a" * 300, [], ["x"], [1, 2], {}, {"0": "MR"}, {"1": 2}, {"image": None},
        {"image": "imagesTr/BRATS_000.nii.gz", "label": 3}, {"": ""},
    ])


def _mutate(meta: dict, rng: random.Random) -> dict:
    meta = copy.deepcopy(meta)
    for _ in range(rng.randint(1, 3)):
        container, key = rng.choice(list(_nodes(meta)))
        action = rng.random()
        if action < 0.6:
            container[key] = _random_value(rng)
        elif action < 0.8:
            del container[key]
        elif isinstance(container, dict):
            container[rng.choice(["1", "-1", "01", "x", "label", "image", "7"])] = _random_value(rng)
        else:
            container.append(_random_value(rng))
    return meta


@pytest.mark.parametrize("make", [nnunet_folder, decathlon_folder], ids=["nnunetv2", "decathlon"])
def test_fuzzed_dataset_json_reads_or_raises_bad_input(tmp_path: Path, make) -> None:
    """300 random type/value mutations of a valid file: the reader returns a dataset or raises BadInput."""
    path = datasets.write(tmp_path / "dataset.json", make(tmp_path))
    valid = json.loads(path.read_text())
    rng = random.Random(20240607)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        path.write_text(json.dumps(_mutate(valid, rng)))
        try:
            assert isinstance(datasets.read(path), Dataset)
            outcomes["read"] += 1
        except BadInput as exc:
            assert exc.what == str(path) and exc.problem
            outcomes["refused"] += 1
    assert outcomes["read"] > 10 and outcomes["refused"] > 100, outcomes

