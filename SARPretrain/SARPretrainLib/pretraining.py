"""SAR pretraining from scene volumes and folders (:class:`PretrainLogic`), as a background job.

Each source (a scene volume or a folder of scans) is tagged with a source name (``ct``, ``mr``, ...):
the name picks the intensity normalisation and is what SAR's source discriminator tells apart. Scene
volumes are exported to NIfTI on their exact grid under ``<work>/pretrain/<model>/<source>/``, then
``sarseg pretrain --data SOURCE=FOLDER ... --out <models root>/<name>`` is submitted (a taken name gets the
next version: nothing is overwritten). No sources: the engine's built-in synthetic phantoms.
Only the standard library is imported at module level.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from SARSegmentationLib.models import cuda_available, resolve_device, safe_name, work_root
from SARSegmentationLib.protocols import JobRunner, ModelStore, SARLogicError, SceneAdapter

PRESETS = ("tiny", "small", "genesis")
_SOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass
class PretrainSource:
    """A scene volume (``node_id``) or a folder / file / glob / dataset.json (``path``) under a source name."""

    name: str
    node_id: str | None = None
    path: str | None = None

    def describe(self, scene: SceneAdapter | None = None) -> str:
        if self.node_id:
            node = scene.node(self.node_id) if scene is not None else None
            return f"{self.name}: volume '{scene.node_name(node) if node is not None else self.node_id}'"
        return f"{self.name}: {self.path}"


class PretrainLogic:
    """Builds and submits ``sarseg pretrain`` jobs; no Qt, no ``slicer.app``."""

    def __init__(self, runner: JobRunner, models: ModelStore, scene: SceneAdapter,
                 data_root: str | Path | None = None, cuda: Callable[[], bool] = cuda_available) -> None:
        self.runner, self.models, self.scene, self.cuda = runner, models, scene, cuda
        self.data_root = Path(data_root) if data_root is not None else work_root() / "pretrain"

    @staticmethod
    def check_source_name(name: str) -> str:
        name = str(name or "").strip().lower()
        if not _SOURCE.match(name):
            raise SARLogicError(f"source name {name!r}: start with a letter; use letters, digits, '_' or '-' "
                                "(e.g. ct, mr, pet)")
        return name

    def data_specs(self, sources: Sequence[PretrainSource], data_folder: Path) -> list[str]:
        """``--data`` entries: scene volumes exported into ``data_folder/<source>/``, paths as they are."""
        specs: list[str] = []
        exported: dict[str, Path] = {}
        for index, source in enumerate(sources):
            name = self.check_source_name(source.name)
            if source.node_id:
                node = self.scene.node(source.node_id)
                if node is None:
                    raise SARLogicError(f"volume {source.node_id} of source {name!r} is no longer in the scene")
                folder = data_folder / name
                prefix = f"{index:03d}_{safe_name(self.scene.node_name(node), 'volume')}"
                self.scene.export_volumes([node], [name], folder, prefix=prefix)
                exported[name] = folder
            elif source.path:
                path = Path(source.path).expanduser()
                if not any(ch in str(path) for ch in "*?[") and not path.exists():
                    raise SARLogicError(f"{path}: no such file or folder (source {name!r})")
                specs.append(f"{name}={path}")
            else:
                raise SARLogicError(f"source {name!r} has neither a volume nor a folder")
        specs.extend(f"{name}={folder}" for name, folder in exported.items())
        return specs

    @staticmethod
    def pretrain_args(data: Sequence[str], out: Path, preset: str, device: str, steps: int | None = None,
                      batch_size: int | None = None) -> list[str]:
        args = ["pretrain"]
        if data:
            args += ["--data", *data]
        args += ["--out", str(out), "--preset", preset, "--device", device]
        if steps:
            args += ["--steps", str(int(steps))]
        if batch_size:
            args += ["--batch-size", str(int(batch_size))]
        return args

    def start(self, name: str, sources: Sequence[PretrainSource], preset: str = "small", steps: int | None = None,
              batch_size: int | None = None, device: str = "auto") -> tuple[Any, Path]:
        """Export the scene volumes and submit pretraining into a new model folder; returns (job, folder)."""
        if preset not in PRESETS:
            raise SARLogicError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
        for label, value in (("steps", steps), ("batch size", batch_size)):
            if value is not None and int(value) < 0:
                raise SARLogicError(f"{label} must be positive")
        for source in sources:
            self.check_source_name(source.name)
        device_arg, job_device = resolve_device(device, self.cuda)
        out = self.models.reserve(safe_name(name or "sar-pretrained"), new_version=False)
        data_folder = self.data_root / out.name
        try:
            data = self.data_specs(sources, data_folder)
            job = self.runner.submit("pretrain", self.pretrain_args(data, out, preset, device_arg, steps, batch_size),
                                     job_device)
        except Exception:
            shutil.rmtree(data_folder, ignore_errors=True)
            try:
                out.rmdir()
            except OSError:
                pass
            raise
        return job, out
