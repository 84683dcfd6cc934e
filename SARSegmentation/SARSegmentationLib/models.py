"""Where SAR keeps its files, and the models folder (:class:`FolderModelStore`).

Layout (``sar_home()``: ``$SARSEG_HOME``, else ``sarseg`` in the per-user data folder, the same for
Slicer and the ``sarseg`` command; see ``sarseg/core/paths.py``)::

    models/<name>/model.json, weights.safetensors    one folder per model version, never overwritten
    models/<name>/training/                          that model's training set (nnU-Net v2 layout)
    jobs/<job id>/                                   background jobs (sarseg.core.jobs)
    work/                                            inputs exported for segmentation, pretraining data

The user sees this folder in SAR Segmentation (Advanced) and can choose another one there; the choice
is kept in Slicer's settings and becomes ``$SARSEG_HOME`` of Slicer's process and of every job it starts
(:func:`apply_settings`), as does the number of finished jobs kept (``$SARSEG_KEEP_JOBS``).

A model's versions are sibling folders ``<base>``, ``<base>-v2``, ``<base>-v3``...; fine-tuning a
model writes the next free version. The models are read from ``model.json`` only (plain JSON: no
torch needed in Slicer's own process). Only the standard library is imported at module level.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .protocols import SARLogicError

MODEL_JSON = "model.json"
TRAINING = "training"


# -- folders (defined once in sarseg.core.paths, so Slicer and a terminal use the same ones) ----------

def sar_home() -> Path:
    """``$SARSEG_HOME``, else ``sarseg`` in the per-user data folder (not under Slicer's settings)."""
    from sarseg.core import paths

    return paths.home()


def models_root() -> Path:
    """The user's models folder: ``$SARSEG_MODELS``, else ``sar_home()/models``."""
    from sarseg.core import paths

    return paths.models()


def jobs_root() -> Path:
    """The jobs folder shared by both modules and ``sarseg jobs``: ``$SARSEG_JOBS``, else ``sar_home()/jobs``."""
    from sarseg.core import paths

    return paths.jobs()


def work_root() -> Path:
    """Files made for jobs (exported inputs, pretraining data): ``sar_home()/work``."""
    return sar_home() / "work"


def folders_text() -> str:
    """The folders in the SAR folder, as the module shows them."""
    return (f"models and the training cases added to them: {models_root()}\n"
            f"jobs: {jobs_root()}\ninputs exported for jobs: {work_root()}")


# -- the user's choices, kept in Slicer's settings (``qt.QSettings()``: ``value(key)``, ``setValue(key, v)``)

DATA_FOLDER_SETTING = "SARExtension/DataFolder"
KEEP_JOBS_SETTING = "SARExtension/FinishedJobsKept"


def apply_settings(settings: Any) -> None:
    """Use the SAR folder and the number of finished jobs kept that the user chose (stored in
    ``settings``): they become ``$SARSEG_HOME`` and ``$SARSEG_KEEP_JOBS`` of this process, and so of the
    engine and of every job started from it. Nothing stored: the engine's defaults."""
    from sarseg.core import jobs, paths

    folder = settings.value(DATA_FOLDER_SETTING)
    if folder:
        os.environ[paths.HOME] = str(folder)
    keep = str(settings.value(KEEP_JOBS_SETTING) or "")
    if keep.isdigit() and int(keep) > 0:
        os.environ[jobs.KEEP] = keep


def set_data_folder(settings: Any, folder: str | os.PathLike) -> Path:
    """Keep models, jobs and exported inputs in ``folder`` from now on (stored in ``settings``); returns
    it. :class:`SARLogicError` when it cannot be made or written."""
    text = str(folder or "").strip()
    if not text:
        raise SARLogicError("choose a folder for SAR's models and jobs")
    path = Path(text).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SARLogicError(f"cannot use {path} for SAR's models and jobs: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SARLogicError(f"cannot use {path} for SAR's models and jobs: it is not writable")
    settings.setValue(DATA_FOLDER_SETTING, str(path))
    apply_settings(settings)
    return path


def kept_jobs() -> int:
    """How many finished jobs are kept (``$SARSEG_KEEP_JOBS``, else the engine's default, also when the
    variable is not a number: starting a job then says so)."""
    from sarseg.core.errors import BadInput
    from sarseg.core.jobs import KEEP, KEEP_DEFAULT
    from sarseg.core.paths import limit

    try:
        return limit(KEEP, KEEP_DEFAULT)
    except BadInput:
        return KEEP_DEFAULT


def set_kept_jobs(settings: Any, count: int) -> None:
    """Keep the last ``count`` finished jobs from now on (stored in ``settings``)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SARLogicError(f"the number of finished jobs kept must be 1 or more (got {count!r})")
    settings.setValue(KEEP_JOBS_SETTING, count)
    apply_settings(settings)


def safe_name(text: str, fallback: str = "model") -> str:
    """A folder / case name from free text: letters, digits, '.', '_' and '-' only (``sarseg.core.registry``)."""
    from sarseg.core.registry import safe_name as core_safe_name

    return core_safe_name(text, fallback)


def split_version(name: str) -> tuple[str, int]:
    """``"brain-v3"`` -> ``("brain", 3)``; a name without ``-vN`` is version 1 (``sarseg.core.registry``)."""
    from sarseg.core.registry import split_version as core_split_version

    return core_split_version(name)


# -- models --------------------------------------------------------------------------------------

def core_call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a ``sarseg.core`` function; its ``BadInput`` becomes the :class:`SARLogicError` the modules show."""
    from sarseg.core.errors import BadInput

    try:
        return function(*args)
    except BadInput as exc:
        raise SARLogicError(str(exc)) from None


@dataclass
class ModelInfo:
    """One model folder: a view of its model card (``sarseg.core.card.ModelCard``, which reads and
    checks ``model.json``) under the folder's name."""

    name: str
    path: Path
    card: Any = field(repr=False)  # sarseg.core.card.ModelCard (the engine is imported on first use)
    builtin: bool = False

    @property
    def kind(self) -> str:
        return self.card.kind

    @property
    def base(self) -> str:
        return split_version(self.name)[0]

    @property
    def version(self) -> int:
        return split_version(self.name)[1]

    @property
    def in_channels(self) -> int:
        return self.card.architecture.in_channels

    @property
    def modalities(self) -> list[str]:
        """One name per input channel (model.json ``modalities``; ``channel N`` when unnamed)."""
        return list(self.card.modalities) or [f"channel {i + 1}" for i in range(self.in_channels)]

    @property
    def labels(self) -> list[dict]:
        """Segments this model paints: [{"name", "value", "color"}], from model.json."""
        return self.card.labels.segments() if self.card.labels else []

    @property
    def label_scheme(self) -> dict | None:
        """The label scheme (mode, names, values, paint, colors) the model predicts."""
        return self.card.labels.to_dict() if self.card.labels else None

    @property
    def preset(self) -> str:
        return self.card.preset or "small"

    @property
    def steps(self) -> int | None:
        steps = self.card.provenance.get("steps")
        return int(steps) if isinstance(steps, (int, float)) else None

    @property
    def sources(self) -> list[str]:
        return list(self.card.sources)

    @property
    def description(self) -> str:
        """The model card for a person, as ``sarseg models show`` prints it (``sarseg.core.registry.describe``)."""
        from sarseg.core.registry import describe

        return f"{self.name}{' (built-in, read-only)' if self.builtin else ''}\n{describe(self.card)}"

    @property
    def display_name(self) -> str:
        parts = [self.kind]
        if self.kind == "segmentation":
            parts.append(", ".join(self.modalities))
            parts.append(", ".join(label["name"] for label in self.labels))
        elif self.sources:
            parts.append("sources " + ", ".join(self.sources))
        if self.builtin:
            parts.append("built-in")
        return f"{self.name} ({'; '.join(p for p in parts if p)})"


def read_model(folder: str | Path, builtin: bool = False) -> ModelInfo:
    """A model folder's checked ``model.json``; raises :class:`SARLogicError` otherwise."""
    from sarseg.core.card import read_card

    folder = Path(folder)
    return ModelInfo(folder.name, folder, core_call(read_card, folder), builtin)


class FolderModelStore:
    """The models the modules offer: ``sarseg.core.registry.Registry`` (the user's versioned models under
    ``root`` and the read-only built-ins, the same listing as ``sarseg models list``) seen as
    :class:`ModelInfo`, its errors as :class:`SARLogicError`.

    Implements :class:`SARSegmentationLib.protocols.ModelStore`. Nothing is ever overwritten: new
    models and imports get the next free version name. ``builtin_roots``: None for the built-ins
    shipped with the engine.
    """

    def __init__(self, root: str | Path | None = None, builtin_roots: Sequence[str | Path] | None = None) -> None:
        from sarseg.core.registry import Registry

        self.registry = Registry(root if root is not None else models_root(), builtin_roots)
        self.root = self.registry.root

    def list(self, kinds: Sequence[str] = ("segmentation",)) -> list[ModelInfo]:
        """Readable models of these kinds: the user's first (by base name, then version), then built-ins."""
        return [ModelInfo(m.name, m.folder, m.card, m.builtin) for m in self.registry.list(tuple(kinds))]

    def get(self, name: str) -> ModelInfo:
        model = core_call(self.registry.get, name)
        return ModelInfo(model.name, model.folder, model.card, model.builtin)

    def next_version(self, name: str) -> str:
        """The next free version name of ``name``'s model: ``brain`` / ``brain-v2`` -> ``brain-v3``..."""
        return self.registry.next_version(name)

    def reserve(self, name: str, new_version: bool = True) -> Path:
        """Create (and so reserve) an empty folder for a new model: ``name`` itself when free and
        ``new_version`` is False, else the next free version. Never returns an existing folder."""
        return core_call(self.registry.reserve, name, new_version)

    def training_folder(self, name: str) -> Path:
        """Where the training cases annotated for model ``name`` go (in the user's folder, also for
        a built-in model)."""
        return self.root / safe_name(name) / TRAINING

    def import_zip(self, path: str | Path) -> ModelInfo:
        """Unpack a zipped model folder as a new model: only its model card and the weights it names are
        written, both checked (``sarseg.core.archive``). A taken name gets the next version."""
        model = core_call(self.registry.import_zip, Path(path))
        return ModelInfo(model.name, model.folder, model.card, model.builtin)


def cuda_available() -> bool:
    """Whether an NVIDIA driver is installed: it decides which queue an "auto" job joins. Asked of the
    system, not of torch, because Slicer's GUI process never imports torch; the job itself picks its
    device with torch (``--device auto``), so a driver without a CUDA build of torch costs only a slot."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").is_file()
    return shutil.which("nvidia-smi") is not None


DEVICES = {"auto": "auto", "gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}


def resolve_device(choice: str, cuda: Any = cuda_available) -> tuple[str, str]:
    """The ``--device`` argument and the job scheduling device (cpu | cuda) for a GUI choice
    (auto | GPU | CPU). ``cuda``: a callable telling whether a GPU is there (only asked for auto)."""
    key = str(choice or "auto").strip().lower().split()[0] if str(choice or "").strip() else "auto"
    if key not in DEVICES:
        raise SARLogicError(f"unknown device {choice!r}; choose auto, GPU or CPU")
    argument = DEVICES[key]
    if argument == "auto":
        return "auto", "cuda" if cuda() else "cpu"
    return argument, argument

