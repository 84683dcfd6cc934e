"""Segmenting scene volumes with a SAR model as a background ``sarseg segment`` job (:class:`SegmentationLogic`).

Flow: export the input volumes (one per model channel) to NIfTI on their exact grid, submit
``sarseg segment`` through the job runner, poll it (the GUI does this from a timer), and when it is done
load the label map back as segments named and colored as ``model.json`` says, in the input's
subject hierarchy study. Running again for the same input replaces the segments of the same
segmentation node. Only the standard library is imported at module level.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .jobs import BackgroundCanceller, JobStatus, log_tail, status_of
from .models import cuda_available, resolve_device, work_root
from .protocols import JobRunner, LogFollower, ModelStore, SARLogicError, SceneAdapter

OUTPUT_NAME = "segmentation.nii.gz"


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


class SegmentationLogic:
    """Segmentation with background jobs; no Qt, no ``slicer.app`` (the scene comes in ``scene``).

    ``runner``: :class:`~SARSegmentationLib.protocols.JobRunner` (``sarseg.core.jobs.JobManager``);
    ``models``: :class:`~SARSegmentationLib.protocols.ModelStore`; ``scene``:
    :class:`~SARSegmentationLib.protocols.SceneAdapter`; ``work_folder``: where inputs are exported;
    ``cuda``: tells whether a GPU is there (for device "auto"); ``canceller``: how cancelling runs
    (the GUI passes a :class:`BackgroundCanceller` with a worker thread; default: at once).
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
        """Export the inputs and submit ``sarseg segment``; returns at once (the job runs in the background)."""
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
                         self.scene.node_id(segmentation_node), roi, args)
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
        still runs. Raises :class:`SARLogicError` (with the log's end) when it failed or was stopped.
        Calling it again after loading returns the same node without loading twice."""
        run = self.runs.get(job_id)
        if run is None:
            raise SARLogicError(f"job {job_id} is not a segmentation started here")
        if run.loaded_id is not None:
            return self.scene.node(run.loaded_id)
        job = self.runner.poll(job_id)
        if not job.finished:
            return None
        if job.state != "done":
            tail = log_tail(self.runner.log(job_id))
            raise SARLogicError(f"segmentation {job.state}" + (f":\n{tail}" if tail else ""))
        if not run.output.is_file():
            raise SARLogicError(f"segmentation finished but wrote no {run.output}")
        volumes = [self.scene.node(node_id) for node_id in run.volume_ids]
        if any(v is None for v in volumes):
            raise SARLogicError("an input volume was removed from the scene before the result came back")
        reference = volumes[0]
        target = self.scene.node(run.segmentation_id) if run.segmentation_id else None
        if target is None:
            target = self.scene.remembered_output(reference)
        node = self.scene.load_label_map(run.output, run.labels, reference, target,
                                         name=f"{self.scene.node_name(reference)} {run.model_name}")
        self.scene.place_in_study(node, reference)
        self.scene.remember_output(reference, node)
        run.loaded_id = self.scene.node_id(node)
        if not self.keep_files:
            shutil.rmtree(run.folder, ignore_errors=True)
        return node

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
