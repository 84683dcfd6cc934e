"""Where a segmentation's result lands, and what the modules show when a job ends, against Slicer's real
MRML (the ``slicer-core`` wheel) with the in-memory job runner of ``test_slicer_logic``.

Issue 10: nothing is ever written into another volume's result (patient A's node is byte-for-byte
unchanged after segmenting patient B); a result is not loaded after a scene close (a new scene reuses
the node IDs), its files are kept and the module says where; every failure reaches the status line and
an error dialog, never "done".
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from test_slicer_logic import SMALL, FakeRunner, make_volume, segment_names, write_model  # also skips without slicer

import slicer
from SARPretrainLib import JobsPanelLogic
from SARSegmentationLib import FolderModelStore, MRMLSceneAdapter, SARLogicError, SegmentationLogic
from SARSegmentationLib.outcomes import JobOutcome
from SARSegmentationLib.scene import OUTPUT_REFERENCE
from sarseg import io as sario
from sarseg import mrml, phantom

MODEL = "tumor-model"


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def runner(tmp_path):
    return FakeRunner(tmp_path / "jobs")


@pytest.fixture
def logic(tmp_path, scene, runner):
    store = FolderModelStore(tmp_path / "models")
    write_model(store.root / MODEL)
    return SegmentationLogic(runner, store, MRMLSceneAdapter(scene), tmp_path / "work", cuda=lambda: False)


def patient(scene, name: str, seed: int):
    """A volume in its own patient and study (subject hierarchy), as a DICOM import makes them."""
    volume, label, geometry = make_volume(scene, seed=seed, name=name)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), f"patient {name}"),
                                      f"study {name}")
    hierarchy.CreateItem(study, volume)
    return volume, label, geometry, study


def run_to_end(logic, runner, volume, label, geometry, state="done", **kwargs):
    """Start a segmentation, write its result as the engine would, end the job; returns the run."""
    run = logic.start(MODEL, [volume], **kwargs)
    sario.write_image(run.output, label.astype(np.int16), geometry)
    runner.jobs[run.job_id].state = state
    return run


def study_of(scene, node) -> int:
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))


def snapshot(scene, node, volume, folder: Path) -> dict:
    """Everything of a segmentation node a run could change: the .seg.nrrd Slicer writes of it (voxels,
    segment IDs, names, colors, reference geometry), its exported label map, node references, study,
    name, and modification times."""
    path = folder / f"{uuid.uuid4().hex}.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    scene.RemoveNode(storage)
    segmentation = node.GetSegmentation()
    return {
        "file": path.read_bytes(),
        "labels": mrml.segmentation_to_labelmap(scene, node, volume, {"tumor": 1}).tobytes(),
        "segments": [(segmentation.GetNthSegmentID(i), segmentation.GetNthSegment(i).GetName(),
                      tuple(segmentation.GetNthSegment(i).GetColor())) for i in range(segmentation.GetNumberOfSegments())],
        "reference": node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()),
        "geometry": segmentation.GetConversionParameter("Reference image geometry"),
        "study": study_of(scene, node),
        "name": node.GetName(),
        "mtime": (node.GetMTime(), segmentation.GetMTime()),
    }


# ------------------------------------------------------------------ point 2: never another volume's node


def test_segmenting_b_after_a_leaves_a_byte_for_byte(tmp_path, scene, runner, logic):
    a, label_a, geometry, study_a = patient(scene, "A", seed=1)
    b, label_b, _, study_b = patient(scene, "B", seed=2)
    assert (label_a > 0).sum() != (label_b > 0).sum()
    run = run_to_end(logic, runner, a, label_a > 0, geometry)
    seg_a = logic.finish(run.job_id)
    assert seg_a.GetName() == "A tumor-model" and study_of(scene, seg_a) == study_a
    before = snapshot(scene, seg_a, a, tmp_path)

    # what the widget did before: A's node, still in the output selector, passed for B
    jobs = len(runner.jobs)
    with pytest.raises(SARLogicError, match="'A tumor-model' holds the result of volume 'A', not of 'B'"):
        logic.start(MODEL, [b], segmentation_node=seg_a)
    assert len(runner.jobs) == jobs and not any((tmp_path / "work").iterdir())  # nothing submitted or left

    # no output chosen: B gets its own node, in its own study
    seg_b = logic.finish(run_to_end(logic, runner, b, label_b > 0, geometry).job_id)
    assert seg_b is not seg_a and seg_b.GetName() == "B tumor-model" and study_of(scene, seg_b) == study_b
    assert logic.scene.remembered_output(b) is seg_b and logic.scene.remembered_output(a) is seg_a
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg_b, b, {"tumor": 1}), label_b > 0)
    assert snapshot(scene, seg_a, a, tmp_path) == before

    # A again: its own node is filled again, B's is left alone
    before_b = snapshot(scene, seg_b, b, tmp_path)
    again = logic.finish(run_to_end(logic, runner, a, np.zeros(SMALL, bool), geometry).job_id)
    assert again is seg_a and not mrml.segmentation_to_labelmap(scene, seg_a, a, {"tumor": 1}).any()
    assert snapshot(scene, seg_b, b, tmp_path) == before_b
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def test_an_explicit_output_is_used_only_when_it_is_no_other_volumes(tmp_path, scene, runner, logic):
    a, label_a, geometry, _ = patient(scene, "A", seed=1)
    b, label_b, _, study_b = patient(scene, "B", seed=2)
    manual = mrml.labelmap_to_segmentation(scene, (label_a > 0).astype(np.int16), geometry,
                                           [{"name": "tumor", "value": 1, "color": [0.1, 0.8, 0.1]}], a,
                                           name="A drawn by hand")  # not SAR's, but drawn on A
    before = snapshot(scene, manual, a, tmp_path)
    with pytest.raises(SARLogicError, match="'A drawn by hand' holds the result of volume 'A'"):
        logic.start(MODEL, [b], segmentation_node=manual)
    assert snapshot(scene, manual, a, tmp_path) == before

    # a node of nobody's (the selector's "Create new segmentation") is filled and becomes B's
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    seg = logic.finish(run_to_end(logic, runner, b, label_b > 0, geometry, segmentation_node=empty).job_id)
    assert seg is empty and segment_names(seg) == ["tumor"] and study_of(scene, seg) == study_b
    assert logic.scene.output_owners(seg) == [b]
    with pytest.raises(SARLogicError, match="'my segmentation' holds the result of volume 'B', not of 'A'"):
        logic.start(MODEL, [a], segmentation_node=empty)

    # chosen while nobody's, but B's by the time the result comes: not written, files kept
    late = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "late")
    run = run_to_end(logic, runner, a, label_a > 0, geometry, segmentation_node=late)
    b.SetNodeReferenceID(OUTPUT_REFERENCE, late.GetID())
    outcome = logic.outcome(run.job_id, logic.status(run.job_id))
    assert outcome.dialog == "error" and "'late' holds the result of volume 'B'" in outcome.details
    assert late.GetSegmentation().GetNumberOfSegments() == 0 and run.output.is_file()

    # the node remembered for A was re-pointed to B since: A gets a new node, B's stays as it is
    remembered = logic.finish(run_to_end(logic, runner, a, label_a > 0, geometry).job_id)
    remembered.SetReferenceImageGeometryParameterFromVolumeNode(b)
    before = snapshot(scene, remembered, b, tmp_path)
    fresh = logic.finish(run_to_end(logic, runner, a, label_a > 0, geometry).job_id)
    assert fresh is not remembered and logic.scene.remembered_output(a) is fresh
    assert snapshot(scene, remembered, b, tmp_path) == before


# --------------------------------------------------------------------- point 5: not after a scene close


@pytest.mark.parametrize("told", [True, False], ids=["told-by-the-widget", "not-told"])
def test_a_result_is_not_loaded_into_the_next_scene(told, tmp_path, scene, runner, logic):
    a, label_a, geometry, _ = patient(scene, "A", seed=1)
    chosen = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chosen")
    run = logic.start(MODEL, [a], segmentation_node=chosen)
    ids = (a.GetID(), chosen.GetID())
    scene.Clear(0)  # File > Close Scene
    if told:
        logic.scene_closed()  # the widget's StartCloseEvent observer
    # the next scene: other nodes with the same IDs
    c, label_c, _, _ = patient(scene, "C", seed=3)
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "C's own")
    assert (c.GetID(), other.GetID()) == ids
    sario.write_image(run.output, (label_a > 0).astype(np.int16), geometry)
    runner.jobs[run.job_id].state = "done"

    outcome = logic.outcome(run.job_id, logic.status(run.job_id))
    assert outcome.dialog == "warning" and outcome.node is None and str(run.folder) in outcome.message
    assert outcome.message.startswith("The scene was closed while the segmentation ran; the result was not loaded")
    assert run.output.is_file() and sorted(p.name for p in run.folder.iterdir()) == [
        "input_0000.nii.gz", "segmentation.nii.gz"]  # kept
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1 and other.GetSegmentation().GetNumberOfSegments() == 0
    assert c.GetNodeReferenceID(OUTPUT_REFERENCE) is None

    # a run started in the new scene loads as usual
    seg = logic.finish(run_to_end(logic, runner, c, label_c > 0, geometry).job_id)
    assert seg is not other and logic.scene.remembered_output(c) is seg


def test_a_closed_scene_lets_go_of_finished_runs(scene, runner, logic):
    a, label_a, geometry, _ = patient(scene, "A", seed=1)
    done = run_to_end(logic, runner, a, label_a > 0, geometry)
    assert logic.finish(done.job_id) is not None
    running = logic.start(MODEL, [a])
    logic.scene_closed()
    assert done.job_id not in logic.runs and logic.runs[running.job_id].volumes == []  # the nodes are let go
    with pytest.raises(SARLogicError, match="not a segmentation started here"):
        logic.finish(done.job_id)


# ------------------------------------------------------------------- point 9: every failure is shown


def test_every_end_of_a_segmentation_is_shown(scene, runner, logic):
    a, label_a, geometry, _ = patient(scene, "A", seed=1)

    def ended(run, state="done", exit_code=None, log=""):
        runner.jobs[run.job_id].state, runner.jobs[run.job_id].exit_code = state, exit_code
        runner.logs[run.job_id] = log
        return logic.outcome(run.job_id, logic.status(run.job_id))

    failed = ended(logic.start(MODEL, [a]), "failed", 2,
                   "loading the model\nTraceback (most recent call last):\nsarseg: error: input: not a volume\n")
    assert failed.message == "Segmentation failed (exit code 2): sarseg: error: input: not a volume"
    assert (failed.dialog, failed.text) == ("error", "The segmentation failed (exit code 2).")
    assert failed.details.startswith("loading the model\nTraceback")
    interrupted = ended(logic.start(MODEL, [a]), "interrupted")
    assert interrupted.dialog == "error" and interrupted.details.endswith("wrote no log.")
    assert ended(logic.start(MODEL, [a]), "cancelled") == JobOutcome("Segmentation cancelled.")

    run = logic.start(MODEL, [a])
    missing = ended(run)
    assert missing.dialog == "error" and f"wrote no {run.output}" in missing.message
    assert f"Its files are kept in {run.folder}" in missing.details

    run = logic.start(MODEL, [a])
    run.output.write_bytes(b"\x1f\x8b not a NIfTI")
    unreadable = ended(run)
    assert unreadable.dialog == "error" and "could not be loaded" in unreadable.message and run.output.is_file()

    run = logic.start(MODEL, [a])
    sario.write_image(run.output, np.ones((8, 8, 8), np.int16), phantom.geometry((8, 8, 8)))
    assert ended(run).dialog == "error"  # another grid than the input's

    b, label_b, _, _ = patient(scene, "B", seed=2)
    run = logic.start(MODEL, [b])
    sario.write_image(run.output, (label_b > 0).astype(np.int16), geometry)
    scene.RemoveNode(b)
    removed = ended(run)
    assert removed.dialog == "error" and "input volume was removed" in removed.message
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0  # nothing loaded by any of these

    run = logic.start(MODEL, [a])
    lost = logic.outcome(run.job_id, None)  # read again fine, but no longer followed
    assert lost.dialog == "error" and "no longer followed (it is running)" in lost.message

    done = ended(run_to_end(logic, runner, a, label_a > 0, geometry))
    assert done.dialog == "" and done.message == "Done: segments written to 'A tumor-model'."
    assert done.node is logic.scene.remembered_output(a)

    run = logic.start(MODEL, [a])  # the last job: the in-memory runner numbers jobs by their count
    del runner.jobs[run.job_id]  # its folder was removed: the status cannot be read
    gone = logic.outcome(run.job_id, None)
    assert gone.message.startswith(f"Cannot read the segmentation job {run.job_id}") and gone.dialog == "error"
    assert str(run.folder) in gone.details

    for outcome in (failed, interrupted, missing, unreadable, removed, gone, lost):
        assert not outcome.message.startswith("Done") and outcome.node is None


def test_an_outcome_shows_itself():
    calls = []

    def status_line(text):
        calls.append(("status", text))

    def error(text, detailedText=""):
        calls.append(("error", text, detailedText))

    def warning(text, detailedText=""):
        calls.append(("warning", text, detailedText))

    JobOutcome("Segmentation cancelled.").show(status_line, error, warning)
    JobOutcome("Failed: x", "error", "It failed.", "the log").show(status_line, error, warning)
    JobOutcome("Not loaded.", "warning", "Not loaded.", "files in /x").show(status_line, error, warning)
    assert calls == [("status", "Segmentation cancelled."), ("status", "Failed: x"), ("error", "It failed.", "the log"),
                     ("status", "Not loaded."), ("warning", "Not loaded.", "files in /x")]


def test_pretrain_jobs_started_here_report_their_end_once(tmp_path):
    runner = FakeRunner(tmp_path / "jobs")
    panel = JobsPanelLogic(runner)
    pretrained = runner.submit("pretrain", ["pretrain", "--out", str(write_model(tmp_path / "m" / "sar-p", "pretrained"))])
    tuned = runner.submit("finetune", ["finetune", "--out", str(tmp_path / "m" / "sar-p-v2")])
    empty = runner.submit("finetune", ["finetune", "--out", str(tmp_path / "m" / "sar-p-v3")])
    stopped = runner.submit("pretrain", ["pretrain", "--out", str(tmp_path / "m" / "other")])
    vanished = runner.submit("pretrain", ["pretrain", "--out", str(tmp_path / "m" / "gone")])
    unwatched = runner.submit("pretrain", ["pretrain", "--out", str(tmp_path / "m" / "theirs")])
    for job in (pretrained, tuned, empty, stopped, vanished):
        panel.watch(job.id)
    assert panel.ended() == []  # all still running

    pretrained.state, empty.state, stopped.state, unwatched.state = "done", "done", "cancelled", "failed"
    tuned.state, tuned.exit_code = "failed", 1
    runner.logs[tuned.id] = "step 3\nsarseg: error: dataset.json: no cases\n"
    del runner.jobs[vanished.id]
    shown = {o.message.split(":")[0]: o for o in panel.ended()}
    assert shown["Pretraining done"] == JobOutcome("Pretraining done: model sar-p.")
    assert shown["Fine-tuning failed (exit code 1)"].dialog == "error"
    assert shown["Fine-tuning failed (exit code 1)"].details.endswith("sarseg: error: dataset.json: no cases")
    assert shown[f"The fine-tuning job {empty.id} finished but wrote no model."].dialog == "error"
    assert shown["Pretraining cancelled."] == JobOutcome("Pretraining cancelled.")
    assert shown[f"Cannot read the SAR job {vanished.id}"].dialog == "error"
    assert len(shown) == 5 and panel.ended() == []  # once; the job not started here is not reported
