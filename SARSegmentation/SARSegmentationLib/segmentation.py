"""Segmenting scene volumes with a SAR model as a background ``sarseg segment`` job (:class:`SegmentationLogic`).

Flow: export the input volumes (one per model channel) to NIfTI on their exact grid, submit
``sarseg segment`` through the job runner, poll it (the GUI does this from a timer), and when it is done
load the label map back as segments named and colored as ``model.json`` says, in the input's
subject hierarchy study. Running again for the same input replaces the segments of the same
segmentation node.

Whose node is written (:meth:`SegmentationLogic.start`, :meth:`SegmentationLogic.finish`): the node
remembered for the input (the one made for it last time), else a new one. A node the caller names
explicitly is written only when it belongs to no other volume; one that holds another volume's result
(remembered for it, or with another volume as its reference geometry) is refused with a
:class:`SARLogicError`, so another patient's segments, geometry and study are never touched.

A result is loaded only into the scene and onto the nodes the job was started for: the logic keeps the
node objects (a node ID is reused by a new scene after a close) and is told about a scene close
(:meth:`SegmentationLogic.scene_closed`); otherwise :class:`ResultNotLoaded` says where the files are
kept. :meth:`SegmentationLogic.outcome` turns a job's end into what the module shows
(:class:`~.outcomes.JobOutcome`). Only the standard library is imported at module level.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import outcomes
from .jobs import BackgroundCanceller, JobStatus, log_tail, status_of
from .models import cuda_available, resolve_device, work_root
from .protocols import JobRunner, LogFollower, ModelStore, SARLogicError, SceneAdapter

OUTPUT_NAME = "segmentation.nii.gz"


class ResultNotLoaded(SARLogicError):
    """The job is done but its result is not loaded, on purpose: the scene it was started in was closed
    meanwhile; its files are kept in ``folder``."""

    def __init__(self, reason: str, folder: Path) -> None:
        super().__init__(f"{reason}; the result was not loaded and its files are kept in {folder}")
        self.folder = folder


@dataclass
class SegmentRun:
    """One submitted segmentation and what is needed to load its result."""

    job_id: str
    model_name: str
    labels: list[dict]
    volume_ids: list[str]
    folder: Path
    output: Path
    segmentation_id: str | None = None  # the node to fill; None: the one remembered for the input, or new
    roi: tuple[float, ...] | None = None
    args: list[str] = field(default_factory=list)
    loaded_id: str | None = None
    # the node objects themselves: a new scene reuses the IDs, never the objects (dropped on a scene close)
    volumes: list[Any] = field(default_factory=list, repr=False)
    target: Any = field(default=None, repr=False)
    scene_closed: bool = False


class SegmentationLogic:
    """Segmentation with background jobs; no Qt, no ``slicer.app`` (the scene comes in ``scene``).

    ``runner``: :class:`~SARSegmentationLib.protocols.JobRunner` (``sarseg.core.jobs.JobManager``);
    ``models``: :class:`~SARSegmentationLib.protocols.ModelStore`; ``scene``:
    :class:`~SARSegmentationLib.protocols.SceneAdapter`; ``work_folder``: where inputs are exported;
    ``cuda``: tells whether a GPU is there (for device "auto"); ``canceller``: how cancelling runs
    (the module passes a :class:`~.jobs.SubprocessCanceller`, a detached helper process; default: at once).
    """

    def __init__(self, runner: JobRunner, models: ModelStore, scene: SceneAdapter,
                 work_folder: str | Path | None = None, cuda: Callable[[], bool] = cuda_available,
                 canceller: BackgroundCanceller | None = None, keep_files: bool = False) -> None:
        self.runner, self.models, self.scene = runner, models, scene
        self.work_folder = Path(work_folder) if work_folder is not None else work_root() / "segment"
        self.cuda = cuda
        self.canceller = canceller or BackgroundCanceller(lambda: runner, start=lambda work: work())
        self.keep_files = keep_files
        self.runs: dict[str, SegmentRun] = {}

    # what the GUI shows
    def segmentation_models(self) -> list:
        return self.models.list(("segmentation",))

    def input_names(self, model_name: str) -> list[str]:
        """One label per input selector: the model's channel (modality) names."""
        return list(self.models.get(model_name).modalities)

    def input_warnings(self, model_name: str, volumes: Sequence[Any]) -> list[str]:
        """Why these volumes do not look like the model's training data (its card's ``expects``), for
        the user to confirm before segmenting; empty when they do, or the card says nothing."""
        expects = self.models.get(model_name).card.expects
        if expects is None or not volumes or any(v is None for v in volumes):
            return []
        return self.scene.unlike_training(volumes, expects)

    # running
    @staticmethod
    def segment_args(model_path: Path, inputs: Sequence[Path], output: Path, device: str,
                     roi: Sequence[float] | None = None, tta: bool = False) -> list[str]:
        args = ["segment", "--model", str(model_path), "--input", *[str(p) for p in inputs],
                "--output", str(output), "--device", device]
        if roi is not None:
            args += ["--roi", *[repr(float(v)) for v in roi]]
        if tta:
            args.append("--tta")
        return args

    def start(self, model_name: str, volumes: Sequence[Any], device: str = "auto", roi_node: Any = None,
              segmentation_node: Any = None, tta: bool = False) -> SegmentRun:
        """Export the inputs and submit ``sarseg segment``; returns at once (the job runs in the background).

        ``segmentation_node``: where the segments go; None: the node made for this input last time, else a
        new one. A node that holds another volume's result is refused (:class:`SARLogicError`)."""
        model = self.models.get(model_name)
        if model.kind != "segmentation":
            raise SARLogicError(f"model {model.name!r} is a {model.kind} model; choose a segmentation model")
        if not model.labels:
            raise SARLogicError(f"model {model.name!r}: model.json lists no labels")
        volumes = list(volumes)
        names = model.modalities
        missing = [name for name, node in zip(names, volumes) if node is None]
        if len(volumes) != len(names) or missing:
            raise SARLogicError(f"model {model.name!r} needs {len(names)} input volume(s) ({', '.join(names)}); "
                                f"select {'one for ' + ', '.join(missing) if missing else 'one per channel'}")
        if segmentation_node is not None and not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise SARLogicError("the output must be a segmentation node")
        if segmentation_node is not None:
            self._check_owner(segmentation_node, volumes)
        roi = self.scene.roi_box_lps(roi_node) if roi_node is not None else None
        device_arg, job_device = resolve_device(device, self.cuda)
        self.work_folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="segment-", dir=self.work_folder))
        try:
            inputs = self.scene.export_volumes(volumes, names, folder)
            output = folder / OUTPUT_NAME
            args = self.segment_args(model.path, inputs, output, device_arg, roi, tta)
            job = self.runner.submit("segment", args, job_device)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        run = SegmentRun(job.id, model.name, model.labels, [self.scene.node_id(v) for v in volumes], folder, output,
                         self.scene.node_id(segmentation_node), roi, args, volumes=volumes, target=segmentation_node)
        self.runs[job.id] = run
        return run

    def status(self, job_id: str) -> JobStatus:
        return status_of(self.runner.poll(job_id))

    def log_reader(self, job_id: str) -> LogFollower:
        return self.runner.log_reader(job_id)

    def cancel(self, job_id: str) -> bool:
        return self.canceller.cancel(job_id)

    def finish(self, job_id: str) -> Any:
        """Load the result once the job is done; returns the segmentation node, or None while the job
        still runs. Raises :class:`SARLogicError` (with the log's end) when it failed or was stopped or its
        result cannot be loaded, :class:`ResultNotLoaded` when its scene was closed meanwhile (files kept).
        Calling it again after loading returns the same node without loading twice."""
        run = self.runs.get(job_id)
        if run is None:
            raise SARLogicError(f"job {job_id} is not a segmentation started here")
        if run.loaded_id is not None:
            node = self.scene.node(run.loaded_id)
            return node if node is run.target else None
        job = self.runner.poll(job_id)
        if not job.finished:
            return None
        if job.state != "done":
            tail = log_tail(self.runner.log(job_id))
            raise SARLogicError(f"segmentation {job.state}" + (f":\n{tail}" if tail else ""))
        volumes = [self.scene.node(node_id) for node_id in run.volume_ids]
        if run.scene_closed or any(v is not None and v is not started for v, started in zip(volumes, run.volumes)):
            raise ResultNotLoaded("the scene was closed while the segmentation ran", run.folder)
        if any(v is None for v in volumes):
            raise SARLogicError("an input volume was removed from the scene before the result came back")
        if not run.output.is_file():
            raise SARLogicError(f"segmentation finished but wrote no {run.output}")
        reference = volumes[0]
        target = run.target if run.target is not None and self.scene.node(run.segmentation_id) is run.target else None
        if target is not None:
            self._check_owner(target, volumes)
        else:
            target = self.scene.remembered_output(reference)
            if target is not None and self._other_owners(target, volumes):
                target = None  # re-pointed to another volume since: that one's now; this input gets a new node
        node = self.scene.load_label_map(run.output, run.labels, reference, target,
                                         name=f"{self.scene.node_name(reference)} {run.model_name}")
        self.scene.place_in_study(node, reference)
        self.scene.remember_output(reference, node)
        run.loaded_id, run.target, run.volumes = self.scene.node_id(node), node, []
        if not self.keep_files:
            shutil.rmtree(run.folder, ignore_errors=True)
        return node

    def scene_closed(self) -> None:
        """The scene is being closed: no result started before is loaded afterwards (a new scene reuses the
        node IDs); the nodes are let go. Finished runs are forgotten."""
        for job_id, run in list(self.runs.items()):
            if run.loaded_id is not None:
                del self.runs[job_id]
            else:
                run.scene_closed, run.volumes, run.target = True, [], None

    def outcome(self, job_id: str, status: JobStatus | None) -> outcomes.JobOutcome:
        """What the module shows once the job ended (``status`` None: it could not be read): the result
        loaded ("Done" only then), or why not, as a status line and, for a failure, a dialog with details."""
        run = self.runs.get(job_id)
        folder = run.folder if run is not None else None
        if status is None:
            try:
                status = self.status(job_id)
            except Exception as exc:  # the job's files are gone or unreadable
                return outcomes.unreadable("segmentation", job_id, str(exc), folder)
            if not status.finished:
                return outcomes.unreadable("segmentation", job_id, "it could not be read for a moment and is no "
                                           f"longer followed (it is {status.state})", folder)
        if status.state != "done":
            return outcomes.stopped("segmentation", status, self.runner.log)
        try:
            node = self.finish(job_id)
            if node is None:
                raise SARLogicError(f"the job reports done but is {self.runner.poll(job_id).state}")
        except ResultNotLoaded as exc:
            return outcomes.JobOutcome(f"{outcomes.sentence(str(exc))}.", "warning",
                                       "The segmentation was not loaded.", str(exc))
        except Exception as exc:  # anything that kept the result out of the scene is shown
            kept = f"\nIts files are kept in {folder}" if folder is not None and folder.exists() else ""
            return outcomes.JobOutcome(f"Segmentation done, but its result could not be loaded: {exc}", "error",
                                       "The segmentation's result could not be loaded.", f"{exc}{kept}")
        return outcomes.JobOutcome(f"Done: segments written to '{self.scene.node_name(node)}'.", node=node)

    def _other_owners(self, node: Any, volumes: Sequence[Any]) -> list:
        """The volumes other than ``volumes`` whose result ``node`` holds (see SceneAdapter.output_owners)."""
        ids = {self.scene.node_id(v) for v in volumes}
        return [owner for owner in self.scene.output_owners(node) if self.scene.node_id(owner) not in ids]

    def _check_owner(self, node: Any, volumes: Sequence[Any]) -> None:
        others = self._other_owners(node, volumes)
        if others:
            raise SARLogicError(
                f"segmentation '{self.scene.node_name(node)}' holds the result of volume "
                f"'{self.scene.node_name(others[0])}', not of '{self.scene.node_name(volumes[0])}'; it is left as "
                "it is: choose no output segmentation (\"This volume's own (or new)\") or one made for this volume")

    def wait(self, job_id: str, timeout: float = 600.0, interval: float = 0.2,
             tick: Callable[[JobStatus], None] | None = None) -> Any:
        """Block until the job ends and return :meth:`finish`'s node (scripts and tests; the GUI polls)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if tick is not None:
                tick(status)
            if status.finished:
                return self.finish(job_id)
            if time.monotonic() > deadline:
                raise SARLogicError(f"segmentation job {job_id} still {status.state} after {timeout:.0f} s")
            time.sleep(interval)
