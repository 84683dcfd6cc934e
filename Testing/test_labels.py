"""``sarseg.core.labels``: one label scheme owns classes vs regions, outputs, activation, label maps,
masks, training targets, the built-in schemes, ``auto``, plain dicts (checked field by field) and the
check that a label map holds only values the scheme knows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sarseg.config import finetune_config
from sarseg.core.errors import BadInput
from sarseg.core.labels import MAX_VALUE, SCHEMES, LabelScheme, builtin
from sarseg.io import write_image
from sarseg import phantom
from cli_helpers import assert_bad, run_cli

ROOT = Path(__file__).resolve().parents[1]
BRATS, BINARY = SCHEMES["brats"], SCHEMES["binary"]
RIM_CORE = LabelScheme.classes(["rim", "core"], [1, 2])


def nested_map() -> np.ndarray:
    """A 1x1x5 BraTS map: background, edema (2), necrosis (1), enhancing (4), background."""
    return np.array([[[0, 2, 1, 4, 0]]], dtype=np.int16)


# ------------------------------------------------------------------------------- the network side


def test_outputs_and_activation() -> None:
    assert (RIM_CORE.outputs, BRATS.outputs, BINARY.outputs) == (3, 3, 1)
    logits = torch.tensor([[[2.0]], [[0.0]], [[-2.0]]])[None]  # (1, 3, 1, 1)
    probs = RIM_CORE.activate(logits)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 1, 1))  # softmax over background and classes
    torch.testing.assert_close(probs, torch.softmax(logits, 1))
    torch.testing.assert_close(BRATS.activate(logits), torch.sigmoid(logits))  # one sigmoid per region


def test_class_probabilities_to_paint_values() -> None:
    scheme = LabelScheme.classes(["a", "b"], [3, 7])
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.2, 0.7]])[:, None, None, :]  # (K=3, 1, 1, X=3)
    label = scheme.to_label_map(probs)
    assert label.dtype == np.int16 and label.tolist() == [[[0, 3, 7]]]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_nested_regions_paint_the_most_specific_label_whatever_their_order(order) -> None:
    scheme = LabelScheme("regions", tuple(BRATS.names[i] for i in order), tuple(BRATS.values[i] for i in order),
                         tuple(BRATS.paint[i] for i in order), tuple(BRATS.colors[i] for i in order)).checked("test")
    masks = np.stack(scheme.masks(nested_map())).astype(np.float32)  # perfect probabilities
    assert scheme.to_label_map(masks).tolist() == [[[0, 2, 1, 4, 0]]]


def test_masks_and_training_targets() -> None:
    label = nested_map()
    wt, tc, et = BRATS.masks(label)
    assert (wt.tolist(), tc.tolist(), et.tolist()) == ([[[0, 1, 1, 1, 0]]], [[[0, 0, 1, 1, 0]]], [[[0, 0, 0, 1, 0]]])
    assert [m.tolist() for m in BINARY.masks(label)] == [[[[False, True, True, True, False]]]]  # any non-zero
    target, foreground = BRATS.training_target(label)
    assert target.dtype == np.float32 and target.shape == (3, 1, 1, 5) and target.sum() == 6
    assert foreground.dtype == np.uint8 and foreground.tolist() == [[[[0, 1, 1, 1, 0]]]]
    target, foreground = RIM_CORE.training_target(np.array([[[0, 1, 2, 2]]]))
    assert target.dtype == np.int64 and target.tolist() == [[[[0, 1, 2, 2]]]]
    assert foreground.tolist() == [[[[0, 1, 1, 1]]]]


def test_label_values_the_scheme_does_not_know() -> None:
    label = np.array([[[0, 1, 7, 4, 9]]])
    with pytest.raises(BadInput, match=r"seg\.nii\.gz: holds label value\(s\) \[7, 9\] the label scheme does not know"):
        BRATS.check_values(label, "seg.nii.gz")
    BINARY.check_values(label, "seg.nii.gz")  # any non-zero label is tumor
    BRATS.check_values(nested_map(), "seg.nii.gz")


def test_evaluate_refuses_a_map_with_a_value_the_scheme_does_not_know(tmp_path: Path, capsys) -> None:
    geometry = phantom.geometry((4, 4, 4))
    ref, pred = np.zeros((4, 4, 4), np.int16), np.zeros((4, 4, 4), np.int16)
    ref[1:3, 1:3, 1:3], pred[1:3, 1:3, 1:3] = 1, 7
    write_image(tmp_path / "ref.nii.gz", ref, geometry)
    write_image(tmp_path / "pred.nii.gz", pred, geometry)
    report = tmp_path / "report.json"
    rc, err = run_cli(capsys, ["evaluate", "--pred", tmp_path / "pred.nii.gz", "--ref", tmp_path / "ref.nii.gz",
                               "--label-scheme", "brats", "--json", report])
    assert_bad(rc, err, str(tmp_path / "pred.nii.gz"), "label value(s) [7]", "does not know")
    assert not report.exists()


# ------------------------------------------------------------------------------- built-in and auto


def test_builtin_schemes() -> None:
    assert builtin("brats", "--label-scheme") is BRATS
    assert BRATS.value_of() == {"whole tumor": 2, "tumor core": 1, "enhancing tumor": 4}
    with pytest.raises(BadInput, match="--label-scheme: unknown scheme 'lobes'; choose auto, binary, brats"):
        builtin("lobes", "--label-scheme", ("auto",))


def test_auto_makes_one_class_per_value_found() -> None:
    scheme = LabelScheme.auto([0, 4, 1, 4, 0], "labels")
    assert scheme.mode == "classes" and scheme.names == ("label 1", "label 4")
    assert scheme.values == ((1,), (4,)) and scheme.paint == (1, 4) and len(set(scheme.colors)) == 2
    with pytest.raises(BadInput, match="labels: no label values found"):
        LabelScheme.auto([0, 0], "labels")
    with pytest.raises(BadInput, match=f"values must lie in 1..{MAX_VALUE}"):
        LabelScheme.auto([0, -3], "labels")


def test_segments_for_slicer() -> None:
    assert BINARY.segments() == [{"name": "tumor", "value": 1, "color": [0.9, 0.3, 0.2]}]


# ------------------------------------------------------------------------------- plain dicts


def test_dict_round_trip_and_defaults() -> None:
    for scheme in (BRATS, BINARY, RIM_CORE):
        assert LabelScheme.from_dict(json.loads(json.dumps(scheme.to_dict())), "x") == scheme
    minimal = LabelScheme.from_dict({"names": ["a", "b"], "values": [[1], [2]], "paint": [1, 2]}, "x")
    assert minimal.mode == "classes" and len(minimal.colors) == 2


def test_legacy_model_json_labels() -> None:
    """model.json's ``labels`` entries; cards written by hand may leave out ``values`` and ``label_mode``."""
    entries = [{"name": "tumor", "value": 1, "color": [0.9, 0.3, 0.2]}]
    assert LabelScheme.from_segments(entries, None, "model.json") == LabelScheme.classes(["tumor"], [1], [[0.9, 0.3, 0.2]])
    written = [{**s, "values": list(v)} for s, v in zip(BRATS.segments(), BRATS.values)]
    assert LabelScheme.from_segments(written, "regions", "model.json") == BRATS
    with pytest.raises(BadInput, match=r"model.json: labels\[0\].value must be an integer"):
        LabelScheme.from_segments([{"name": "tumor", "value": "1"}], None, "model.json")


GOOD = {"mode": "classes", "names": ["a", "b"], "values": [[1], [2]], "paint": [1, 2], "colors": [[1, 0, 0], [0, 1, 0]]}


@pytest.mark.parametrize("change, problem", [
    ({"mode": "softmax"}, "labels.mode is 'softmax'; choose classes, regions"),
    ({"names": "a"}, "labels.names must be a JSON array"),
    ({"names": ["a", 3]}, "labels.names[1] must be a non-empty string"),
    ({"names": ["a", "a"]}, "label names must differ (got a, a)"),
    ({"values": [[1], ["2"]]}, "labels.values[1][0] must be an integer"),
    ({"values": [[1], [True]]}, "labels.values[1][0] must be an integer"),
    ({"values": [[1], [40000]], "paint": [1, 40000]}, "label 'b': values must lie in 1..32767"),
    ({"values": [[1], [0]], "paint": [1, 0]}, "label 'b': values must lie in 1..32767 (0 is background"),
    ({"values": [[1], []]}, "label 'b': a class needs its label values"),
    ({"values": [[1, 2], [2]]}, "labels 'a' and 'b' share value 2; classes cannot overlap"),
    ({"paint": [1, 3]}, "label 'b': its painted value 3 is not one of its values [2]"),
    ({"paint": [1]}, "one entry per label"),
    ({"colors": [[1, 0, 0], [0, 2, 0]]}, "labels.colors[1][1] must be a finite number in [0.0, 1.0]"),
    ({"colors": [[1, 0, 0], [0, 1]]}, "labels.colors[1] needs 3 to 3 entries"),
    ({"extra": 1}, "labels has unknown field(s) 'extra'"),
    ({"names": [f"l{i}" for i in range(300)]}, "labels.names needs 1 to 255 entries"),
])
def test_bad_schemes_are_refused_naming_the_field(change: dict, problem: str) -> None:
    with pytest.raises(BadInput) as caught:
        LabelScheme.from_dict({**GOOD, **change}, "config.json")
    assert str(caught.value).startswith("config.json: ") and problem in str(caught.value)


def test_overlapping_values_are_fine_for_regions() -> None:
    assert LabelScheme.from_dict({**GOOD, "mode": "regions", "values": [[1, 2], [2]], "paint": [1, 2]}, "x").outputs == 2


def test_a_bad_scheme_in_a_config_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"my.json: labels.values\[0\]\[0\] must be an integer"):
        finetune_config("tiny", {"labels": {**GOOD, "values": [["x"], [2]]}}, where="my.json")


def test_core_modules_import_without_numpy_or_torch() -> None:
    code = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nimport sarseg.core.labels, sarseg.core.card\n"
            "loaded = [m for m in ('numpy', 'torch', 'monai', 'SimpleITK') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
