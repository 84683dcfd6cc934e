"""The small interfaces the SAR modules' logic is written against.

The logic classes take these as constructor arguments (dependency injection), so the widgets, the
logic and the engine can be tested apart:

* :class:`JobRunner`: background jobs. ``sarseg.core.jobs.JobManager`` implements it; tests may use an
  in-memory double.
* :class:`ModelStore`: the models folder (list, import, new versions, training sets).
  :class:`SARSegmentationLib.models.FolderModelStore` implements it.
* :class:`SceneAdapter`: everything that touches the MRML scene. :class:`SARSegmentationLib.scene.
  MRMLSceneAdapter` implements it on top of ``sarseg.mrml``.
* :class:`TrainingSet`: a model's training set, as the interactive section adds its accepted cases.
  ``SARPretrainLib.training.TrainingSetLogic`` implements it (this package does not import that one).

Only the standard library is imported here: this file loads in any Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable


class SARLogicError(ValueError):
    """A request the user can fix (wrong number of inputs, unknown model, a job that failed...).

    The message is meant to be shown as it is."""


@runtime_checkable
class JobLike(Protocol):
    """What the logic reads from a job (``sarseg.core.jobs.Job`` has all of it)."""

    id: str
    kind: str
    state: str
    device: str
    argv: list
    out: str | None
    folder: str | None
    exit_code: int | None
    progress: dict

    @property
    def finished(self) -> bool: ...


@runtime_checkable
class JobRunner(Protocol):
    """Background jobs that outlive the GUI (and Slicer): ``sarseg.core.jobs.JobManager`` implements this."""

    root: Path

    def submit(self, kind: str, args: Sequence[str], device: str = "cpu") -> JobLike: ...

    def poll(self, job_id: str) -> JobLike: ...

    def list(self) -> list: ...

    def cancel(self, job_id: str, timeout: float = 60.0) -> JobLike: ...

    def resume(self, job_id: str, extra_args: Sequence[str] = ()) -> JobLike: ...

    def log(self, job_id: str) -> str: ...

    def log_reader(self, job_id: str) -> LogFollower: ...


@runtime_checkable
class LogFollower(Protocol):
    """A job's log read on from where the previous read stopped (``sarseg.core.progress.LogReader``)."""

    def read(self, final: bool = False) -> tuple[str, bool]: ...


@runtime_checkable
class ModelStore(Protocol):
    """The user's models folder plus read-only built-in models."""

    root: Path

    def list(self, kinds: Sequence[str] = ("segmentation",)) -> list: ...

    def get(self, name: str) -> Any: ...

    def import_zip(self, path: str | Path) -> Any: ...

    def next_version(self, name: str) -> str: ...

    def reserve(self, name: str, new_version: bool = True) -> Path: ...

    def training_folder(self, name: str) -> Path: ...


@runtime_checkable
class SceneAdapter(Protocol):
    """The MRML scene as the logic needs it; every call goes through ``sarseg.mrml``."""

    scene: Any

    def node(self, node_id: str | None) -> Any: ...

    def node_id(self, node: Any) -> str | None: ...

    def node_name(self, node: Any) -> str: ...

    def export_volumes(self, volumes: Sequence[Any], modalities: Sequence[str], folder: Path,
                       prefix: str = "input") -> list[Path]: ...

    def unlike_training(self, volumes: Sequence[Any], expects: Any) -> list[str]: ...

    def load_label_map(self, path: Path, labels: Sequence[Mapping[str, Any]], reference_volume: Any,
                       segmentation_node: Any = None, name: str = "") -> Any: ...

    def roi_box_lps(self, roi_node: Any) -> tuple[float, float, float, float, float, float]: ...

    def place_in_study(self, node: Any, reference_node: Any) -> None: ...

    def remembered_output(self, volume: Any) -> Any: ...

    def remember_output(self, volume: Any, segmentation_node: Any) -> None: ...

    def output_owners(self, segmentation_node: Any) -> list: ...

    def segments(self, segmentation_node: Any) -> list[tuple[str, tuple[float, float, float]]]: ...

    def write_training_case(self, volumes: Sequence[Any], segmentation_node: Any, name_to_value: Mapping[str, int],
                            folder: Path, case_id: str, modalities: Sequence[str] = (), overwrite: bool = False) -> dict: ...

    def loss_plot(self, key: str, history: Mapping[str, Sequence[tuple[float, float]]], title: str = "",
                  create: bool = False) -> Any: ...


@runtime_checkable
class TrainingSet(Protocol):
    """Cases added to a model's training set (``SARPretrainLib.training.TrainingSetLogic``)."""

    def add_case(self, model_name: str, volumes: Sequence[Any], segmentation_node: Any, case_id: str = "",
                 channels_text: str = "", overwrite: bool = False) -> dict: ...
