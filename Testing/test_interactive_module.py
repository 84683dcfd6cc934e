"""The Interactive section's logic (``SARSegmentationLib.interactive.InteractiveLogic``) against Slicer's real
MRML (the ``slicer-core`` wheel) and a real ``sarseg serve`` worker on a tiny promptable model trained
here: markups in RAS answered as ``sarseg segment --points`` answers the same LPS points, a point outside
the volume refused, latest-wins while a request is slow, undo, Accept, a case added to the training set
(and fine-tuned into a promptable model), a killed worker restarted, and the session ended (worker gone)
when its volume is removed or the scene closed."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_finetune import meta_of, run
from test_slicer_logic import FakeRunner  # also skips without slicer

import slicer
import vtk
from SARPretrainLib import TrainingSetLogic
from SARSegmentationLib import FolderModelStore, MRMLSceneAdapter, SARLogicError, TrainingSet
from SARSegmentationLib.interactive import PREVIEW, InteractiveLogic, worker_client
from sarseg import io as sario
from sarseg import mrml, phantom
from sarseg.cli import EXIT_OK
from sarseg.core.worker import WorkerClient

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "click"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[dict[str, str]]:
    return phantom.write_cases(tmp_path_factory.mktemp("phantoms"), 2)


@pytest.fixture(scope="module")
def store(tmp_path_factory, cases) -> FolderModelStore:
    """A models folder holding a tiny promptable model, trained here for a few steps (what it learned
    does not matter: every answer is compared with the engine's own)."""
    root = tmp_path_factory.mktemp("models")
    config = root / "config.json"
    config.write_text(json.dumps({"val_every": 100, "checkpoint_every": 100}))
    rc, _, err = run("finetune", "--init", "scratch", "--images", *[c["mr"] for c in cases], "--labels",
                     *[c["label"] for c in cases], "--out", root / MODEL, "--preset", "tiny", "--steps", "3",
                     "--modalities", "mr", "--promptable", "--config", config)
    assert rc == EXIT_OK, err
    config.unlink()
    return FolderModelStore(root)


def client_factory(model, cls=None):
    """The module's own worker client for ``model``; with ``cls``, that WorkerClient subclass on the same command."""
    base = worker_client(model, "cpu", threads=1)
    return base if cls is None else cls(base.command, env=base.env, timeout=120)


class GatedClient(WorkerClient):
    """The real client, whose requests wait until the test opens the gate (a slow worker), and which
    records the prompts it was asked for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate, self.asked = threading.Event(), []

    def segment(self, prompts):
        self.asked.append(prompts)
        self.gate.wait(60)
        return super().segment(prompts)


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def volume(scene, cases):
    image = sario.read_image([cases[1]["mr"]], ["mr"])
    return mrml.add_volume_node(scene, image, "MR")


@pytest.fixture
def markups(scene):
    return (scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "inside"),
            scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "outside"),
            scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box"))


def make_logic(store, scene, markups, tmp_path, factory=client_factory, training=None) -> InteractiveLogic:
    logic = InteractiveLogic(store, MRMLSceneAdapter(scene), factory, training=training, work_folder=tmp_path / "work")
    logic.set_markups(*markups)
    return logic


@pytest.fixture
def logic(store, scene, volume, markups, tmp_path):
    logic = make_logic(store, scene, markups, tmp_path)
    logic.start(MODEL, volume)
    yield logic
    logic.stop()


def ras_of(volume, index_xyz) -> tuple[float, float, float]:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return tuple(matrix.MultiplyPoint((*map(float, index_xyz), 1.0))[:3])


def lesion_voxel(case: dict[str, str], offset=(0, 0, 0)) -> tuple[int, int, int]:
    """(x, y, z) of a voxel inside the case's lesion."""
    from sarseg.clicks import click_in, largest_component

    z, y, x = click_in(largest_component(sitk.GetArrayFromImage(sitk.ReadImage(case["label"])) > 0))
    return int(x) + offset[0], int(y) + offset[1], int(z) + offset[2]


def place(node, volume, index_xyz) -> None:
    node.AddControlPointWorld(vtk.vtkVector3d(*ras_of(volume, index_xyz)))


def segment_mask(logic: InteractiveLogic, name: str) -> np.ndarray:
    """The segment's own voxels on the volume's grid (segments may overlap: it is exported alone)."""
    scene = logic.volume.GetScene()
    alone = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    try:
        source = logic.segmentation.GetSegmentation()
        alone.GetSegmentation().CopySegmentFromSegmentation(source, source.GetSegmentIdBySegmentName(name))
        return mrml.segmentation_to_labelmap(scene, alone, logic.volume, {name: 1}) > 0
    finally:
        scene.RemoveNode(alone)


def answered(logic: InteractiveLogic) -> np.ndarray:
    assert logic.update()
    logic.wait(120)
    assert logic.preview_answer is logic.steps[-1].answer, logic.message
    return segment_mask(logic, PREVIEW)


# ------------------------------------------------------------------------------------ prompts


def test_markups_in_ras_give_what_segment_gives_for_the_lps_points(logic, volume, markups, cases, tmp_path):
    inside, outside, _ = markups
    positive, negative = lesion_voxel(cases[1]), lesion_voxel(cases[1], (6, 0, 0))
    place(inside, volume, positive)
    place(outside, volume, negative)
    preview = answered(logic)
    assert logic.message.startswith("Segmented in ") and logic.message.endswith(" ml.")
    lps = [(-r, -a, s) for r, a, s in (ras_of(volume, positive), ras_of(volume, negative))]
    assert logic.steps[-1].prompts.positive == (pytest.approx(lps[0]),)
    output = tmp_path / "cli.nii.gz"
    rc, _, err = run("segment", "--model", logic.model.path, "--input", cases[1]["mr"], "--output", output, "--device",
                     "cpu", "--points", ",".join(map(repr, lps[0])), "--negative-points", ",".join(map(repr, lps[1])))
    assert rc == EXIT_OK, err
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(output))) > 0
    assert expected.any()
    np.testing.assert_array_equal(preview, expected)


def test_a_point_outside_the_volume_is_refused_and_nothing_is_asked(logic, volume, markups, cases):
    inside = markups[0]
    place(inside, volume, lesion_voxel(cases[1]))
    answered(logic)
    steps = len(logic.steps)
    place(inside, volume, (-40, 10, 10))
    with pytest.raises(SARLogicError, match=r"point 2 of 'inside' \(R .*\) lies outside volume 'MR': move it inside"):
        logic.update()
    assert len(logic.steps) == steps and not logic.busy
    inside.RemoveNthControlPoint(1)
    assert not logic.update()  # the markups are back as the step shown: no request


def start_gated(store, scene, markups, tmp_path, volume, first):
    """A started session whose workers (``GatedClient``s, listed in start order) hold each answer until their
    gate is set, with one request in flight: a point placed at voxel ``first`` of the inside list."""
    clients = []

    def gated(model):
        clients.append(client_factory(model, GatedClient))
        return clients[-1]

    logic = make_logic(store, scene, markups, tmp_path, gated)
    logic.start(MODEL, volume)
    place(markups[0], volume, first)
    assert logic.update() and logic.busy
    return logic, clients


def test_latest_wins_while_a_request_is_slow(store, scene, volume, markups, cases, tmp_path):
    logic, clients = start_gated(store, scene, markups, tmp_path, volume, lesion_voxel(cases[1]))
    try:
        client, inside = clients[0], markups[0]
        place(inside, volume, lesion_voxel(cases[1], (2, 0, 0)))  # changed twice while the first is answered
        assert logic.update()
        place(inside, volume, lesion_voxel(cases[1], (0, 2, 0)))
        assert logic.update()
        assert not logic.poll() and logic.preview_answer is None  # the GUI thread never waited
        client.gate.set()
        logic.wait(120)
        first, skipped, newest = logic.steps[1:]
        assert client.asked == [first.prompts, newest.prompts]  # the step in between was never asked for
        assert first.answer is not None and skipped.answer is None and logic.preview_answer is newest.answer
        direct = client.segment(newest.prompts)
        x, y, z = direct["start"]
        sx, sy, sz = direct["size"]
        preview = segment_mask(logic, PREVIEW)
        assert preview.sum() == direct["voxels"] and preview[z:z + sz, y:y + sy, x:x + sx].sum() == direct["voxels"]
    finally:
        logic.stop()


# ------------------------------------------------------------------------------------ undo, accept


def test_undo_restores_the_earlier_segment_without_asking(logic, volume, markups, cases):
    inside, outside, box = markups
    place(inside, volume, lesion_voxel(cases[1]))
    first = answered(logic)
    kept = logic.steps[-1].answer
    place(outside, volume, lesion_voxel(cases[1], (3, 0, 0)))
    second = answered(logic)
    assert logic.undo() and not logic.busy and logic.preview_answer is kept  # kept, not recomputed
    assert outside.GetNumberOfControlPoints() == 0 and inside.GetNumberOfControlPoints() == 1
    np.testing.assert_array_equal(segment_mask(logic, PREVIEW), first)
    assert not logic.update()  # the markups events of the undo ask for nothing
    assert not np.array_equal(first, second) or first.sum() == 0
    box.SetCenter(*ras_of(volume, lesion_voxel(cases[1])))
    box.SetSize(20, 20, 12)
    box.AddControlPoint(vtk.vtkVector3d(*ras_of(volume, lesion_voxel(cases[1]))))
    answered(logic)
    assert logic.steps[-1].prompts.box is not None
    assert logic.undo() and box.GetNumberOfDefinedControlPoints() == 0
    assert logic.undo() and inside.GetNumberOfControlPoints() == 0 and not segment_mask(logic, PREVIEW).any()
    assert not logic.undo()


def test_accept_numbers_the_lesions_and_clears_the_markups(logic, volume, markups, cases):
    inside = markups[0]
    place(inside, volume, lesion_voxel(cases[1]))
    preview = answered(logic)
    assert logic.accept() == "lesion 1"
    assert inside.GetNumberOfControlPoints() == 0 and len(logic.steps) == 1
    np.testing.assert_array_equal(segment_mask(logic, "lesion 1"), preview)
    with pytest.raises(SARLogicError, match="nothing to accept"):
        logic.accept()
    place(inside, volume, lesion_voxel(cases[1], (0, 3, 0)))
    answered(logic)
    assert logic.accept() == "lesion 2"
    np.testing.assert_array_equal(segment_mask(logic, "lesion 1"), preview)  # the next lesion left it alone
    place(inside, volume, lesion_voxel(cases[1]))
    answered(logic)
    logic.reset()
    names = [n for n, _ in logic.scene.segments(logic.segmentation)]
    assert names == ["lesion 1", "lesion 2"] and inside.GetNumberOfControlPoints() == 0


def test_add_to_training_set_and_finetune_a_promptable_version(store, scene, volume, markups, cases, tmp_path):
    adapter = MRMLSceneAdapter(scene)
    training = TrainingSetLogic(FakeRunner(tmp_path / "jobs"), store, adapter, cuda=lambda: False)
    assert isinstance(training, TrainingSet)
    logic = make_logic(store, scene, markups, tmp_path, training=training)
    logic.start(MODEL, volume)
    try:
        with pytest.raises(SARLogicError, match="accept a segment first"):
            logic.add_to_training_set()
        place(markups[0], volume, lesion_voxel(cases[1]))
        accepted = answered(logic)
        logic.accept()
        first = logic.add_to_training_set()
        place(markups[0], volume, lesion_voxel(cases[1], (0, 0, -3)))
        accepted = accepted | answered(logic)
        logic.accept()
        entry = logic.add_to_training_set()  # both lesions, the same case rewritten
        assert "(2 lesions)" in logic.message
    finally:
        logic.stop()
    assert first["case_id"] == entry["case_id"] == "MR" and training.cases(MODEL) == ["MR"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1  # the case's own node is gone
    dataset = training.dataset(MODEL)
    assert list(dataset.channels) == ["mr"] and len(dataset.labeled) == 1
    label = sitk.GetArrayFromImage(sitk.ReadImage(entry["label"]))
    np.testing.assert_array_equal(label, accepted.astype(label.dtype))  # the model's lesion value, 1
    job, out = training.finetune(MODEL, steps=1)
    assert "--promptable" in job.argv
    rc, _, err = run(*job.argv)
    assert rc == EXIT_OK, err
    assert meta_of(out)["prompts"]["channels"] == ["positive", "negative", "box"]  # a new version that takes clicks


# ------------------------------------------------------------------------------------ the worker


def test_a_killed_worker_is_restarted_and_answers(logic, volume, markups, cases):
    place(markups[0], volume, lesion_voxel(cases[1]))
    answered(logic)
    logic.client.process.kill()
    logic.client.process.wait()
    place(markups[0], volume, lesion_voxel(cases[1], (1, 1, 0)))
    preview = answered(logic)  # the new worker, the volume loaded into it again
    assert logic.client.restarts == 1 and "the worker had stopped and was restarted" in logic.message
    again = logic.client.segment(logic.steps[-1].prompts)
    assert again["ok"] and preview.sum() == again["voxels"] == logic.steps[-1].answer.voxels


def test_removing_the_volume_or_closing_the_scene_ends_the_session(logic, scene, volume, store, markups, tmp_path):
    process = logic.client.process
    scene.RemoveNode(volume)
    assert not logic.active and process.wait(30) == 0
    assert logic.message == "The volume was removed: the interactive session ended."
    with pytest.raises(SARLogicError, match="start a session first"):
        logic.update()
    other = mrml.add_volume_node(scene, np.random.default_rng(0).random((24, 48, 48), dtype=np.float32), "other",
                                 phantom.geometry((24, 48, 48)))
    logic.start(MODEL, other)
    process = logic.client.process
    scene.Clear(0)
    assert not logic.active and process.wait(30) == 0 and "scene was closed" in logic.message


def test_a_worker_that_cannot_restart_is_one_line_in_the_status(store, scene, volume, markups, cases, tmp_path, caplog):
    """The model folder gone under a dead worker: the restart fails; the status line says so in one line and
    the log holds the worker's own error output."""
    root = tmp_path / "models"
    shutil.copytree(store.root / MODEL, root / MODEL)
    logic = make_logic(FolderModelStore(root), scene, markups, tmp_path)
    logic.start(MODEL, volume)
    try:
        place(markups[0], volume, lesion_voxel(cases[1]))
        answered(logic)
        logic.client.process.kill()
        logic.client.process.wait()
        shutil.rmtree(root / MODEL)
        place(markups[0], volume, lesion_voxel(cases[1], (1, 1, 0)))
        with caplog.at_level(logging.ERROR):
            assert logic.update()
            message = logic.wait(120)
        assert message.startswith("The worker failed: ") and "\n" not in message and message.endswith("(details in the Python console)")
        assert any("SAR interactive: the worker failed:" in r.getMessage() and "\n" in r.getMessage() for r in caplog.records)
    finally:
        logic.stop()


class DamagedClient(WorkerClient):
    """The real client, whose answers lose their mask (a worker of another version, or a damaged reply)."""

    def segment(self, prompts):
        reply = super().segment(prompts)
        return {k: v for k, v in reply.items() if k != "mask"}


def test_an_unreadable_answer_is_said_not_left_at_segmenting(store, scene, volume, markups, cases, tmp_path, caplog):
    logic = make_logic(store, scene, markups, tmp_path, lambda model: client_factory(model, DamagedClient))
    logic.start(MODEL, volume)
    try:
        place(markups[0], volume, lesion_voxel(cases[1]))
        with caplog.at_level(logging.ERROR):
            assert logic.update()
            message = logic.wait(120)
        assert message.startswith("The worker's answer could not be read (KeyError") and not logic.busy
        assert logic.preview_answer is None or logic.preview_answer.mask is None  # nothing drawn
        assert any("unreadable answer" in r.getMessage() for r in caplog.records)
    finally:
        logic.stop()


# ------------------------------------------------------------------------------------ review: stale answers, moved nodes


def test_an_answer_for_a_cleared_lesion_adds_no_segment(store, scene, volume, markups, cases, tmp_path):
    """Reset or Accept while a request is in flight: its answer, when it comes, adds no empty 'lesion'."""
    logic, clients = start_gated(store, scene, markups, tmp_path, volume, lesion_voxel(cases[1]))
    try:
        client, inside = clients[0], markups[0]
        logic.reset()
        client.gate.set()
        logic.wait(120)
        assert logic.scene.segments(logic.segmentation) == []
        place(inside, volume, lesion_voxel(cases[1]))
        answered(logic)
        client.gate.clear()
        place(inside, volume, lesion_voxel(cases[1], (1, 0, 0)))
        assert logic.update() and logic.busy
        assert logic.accept() == "lesion 1"
        client.gate.set()
        logic.wait(120)
        assert [n for n, _ in logic.scene.segments(logic.segmentation)] == ["lesion 1"]
    finally:
        logic.stop()


def test_a_volume_moved_after_start_is_refused(logic, volume, markups, cases, scene):
    """The worker holds the volume as it was at Start: once moved, clicks would segment the wrong place."""
    place(markups[0], volume, lesion_voxel(cases[1]))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(SARLogicError, match="volume 'MR' .*transform 'shift'.*Start again"):
        logic.update()
    volume.SetAndObserveTransformNodeID(None)
    origin = volume.GetOrigin()
    volume.SetOrigin(origin[0] + 5, origin[1], origin[2])
    with pytest.raises(SARLogicError, match="volume 'MR' moved or changed since Start.*Start again"):
        logic.update()
    assert len(logic.steps) == 1 and not logic.busy
    volume.SetOrigin(*origin)
    answered(logic)


def test_rotating_the_box_is_a_change_and_undo_turns_it_back(logic, volume, markups, cases):
    box = markups[2]
    center = ras_of(volume, lesion_voxel(cases[1]))
    box.AddControlPoint(vtk.vtkVector3d(*center))
    box.SetSize(24, 12, 12)
    answered(logic)
    before = logic.steps[-1].prompts.box
    turned = vtk.vtkTransform()
    turned.Translate(*center)
    turned.RotateZ(90)
    box.SetAndObserveObjectToNodeMatrix(turned.GetMatrix())
    answered(logic)  # the box's bounds changed: asked again
    assert logic.steps[-1].prompts.box != before
    assert logic.undo()
    assert box.GetObjectToNodeMatrix().GetElement(0, 1) == pytest.approx(0.0)
    assert logic.steps[-1].prompts.box == before and not logic.update()


def test_a_deleted_segmentation_is_made_again(logic, volume, markups, cases, scene):
    """The user deleted the lesions' segmentation during the session: the next answer goes to a new one
    in the scene, not to the deleted node."""
    place(markups[0], volume, lesion_voxel(cases[1]))
    answered(logic)
    scene.RemoveNode(logic.segmentation)
    with pytest.raises(SARLogicError, match="nothing to accept"):
        logic.accept()
    place(markups[0], volume, lesion_voxel(cases[1], (1, 0, 0)))
    preview = answered(logic)
    assert scene.IsNodePresent(logic.segmentation) and preview.any()
    assert logic.accept() == "lesion 1"


def test_a_changed_selection_ends_the_session(logic, volume, scene, store):
    process = logic.client.process
    assert not logic.follow(MODEL, volume) and logic.active
    other = mrml.add_volume_node(scene, np.random.default_rng(0).random((24, 48, 48), dtype=np.float32), "other",
                                 phantom.geometry((24, 48, 48)))
    assert logic.follow(MODEL, other) and not logic.active and process.wait(30) == 0
    assert logic.message == "The model or volume selection changed: the interactive session ended; Start again."
    assert not logic.follow(MODEL, other)  # no session: nothing to end


def test_undo_accept_and_add_are_offered_only_when_they_would_do_something(logic, volume, markups, cases):
    assert not (logic.can_undo or logic.can_accept or logic.can_add)
    place(markups[0], volume, lesion_voxel(cases[1]))
    answered(logic)
    assert logic.can_undo and logic.can_accept and not logic.can_add
    logic.accept()
    assert logic.can_add and not (logic.can_undo or logic.can_accept)
    logic.segmentation.GetSegmentation().RemoveSegment(logic.accepted)
    assert not logic.can_add
    logic.stop()
    assert not (logic.can_undo or logic.can_accept or logic.can_add)
