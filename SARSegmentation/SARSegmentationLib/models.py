"""Where SAR keeps its files, and the models folder (:class:`FolderModelStore`).

Layout (``sar_home()``: ``$SAR_HOME``, else ``<Slicer user settings folder>/SAR`` inside Slicer, else
``~/.local/share/sar``)::

    models/<name>/model.json, weights.safetensors    one folder per model version, never overwritten
    models/<name>/training/                          that model's training set (nnU-Net v2 layout)
    jobs/<job id>/                                   background jobs (sarseg.core.jobs)
    work/                                            inputs exported for segmentation, pretraining data

A model's versions are sibling folders ``<base>``, ``<base>-v2``, ``<base>-v3``...; fine-tuning a
model writes the next free version. The models are read from ``model.json`` only (plain JSON: no
torch needed in Slicer's own process). Only the standard library is imported at module level.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from .protocols import SARLogicError

MODEL_JSON = "model.json"
FORMAT = "sar-model"
TRAINING = "training"
KINDS = ("segmentation", "pretrained")
_VERSIONED = re.compile(r"^(?P<base>.+?)-v(?P<version>[0-9]+)$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# -- folders -------------------------------------------------------------------------------------

def _slicer_settings_dir() -> Path | None:
    """Slicer's user settings folder, when running inside the Slicer application."""
    try:
        import slicer  # only inside Slicer (or with slicer-core, which has no application)
    except ImportError:
        return None
    app = getattr(slicer, "app", None)
    path = getattr(app, "slicerUserSettingsFilePath", None) if app is not None else None
    return Path(path).parent if path else None


def sar_home() -> Path:
    """``$SAR_HOME``, else ``<Slicer user settings folder>/SAR`` in Slicer, else ``~/.local/share/sar``."""
    env = os.environ.get("SAR_HOME")
    if env:
        return Path(env).expanduser()
    settings = _slicer_settings_dir()
    if settings is not None:
        return settings / "SAR"
    return Path.home() / ".local" / "share" / "sar"


def models_root() -> Path:
    """The user's models folder: ``$SAR_MODELS``, else ``sar_home()/models``."""
    env = os.environ.get("SAR_MODELS")
    return Path(env).expanduser() if env else sar_home() / "models"


def jobs_root() -> Path:
    """The jobs folder shared by both modules: ``$SAR_JOBS``, else ``sar_home()/jobs``."""
    env = os.environ.get("SAR_JOBS")
    return Path(env).expanduser() if env else sar_home() / "jobs"


def work_root() -> Path:
    """Files made for jobs (exported inputs, pretraining data): ``sar_home()/work``."""
    return sar_home() / "work"


def safe_name(text: str, fallback: str = "model") -> str:
    """A folder / case name from free text: letters, digits, '.', '_' and '-' only."""
    name = _SAFE_NAME.sub("_", str(text).strip()).strip("._-")
    return name or fallback


def split_version(name: str) -> tuple[str, int]:
    """``"brain-v3"`` -> ``("brain", 3)``; a name without ``-vN`` is version 1."""
    match = _VERSIONED.match(name)
    return (match.group("base"), int(match.group("version"))) if match else (name, 1)


# -- models --------------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    """One model folder as ``model.json`` describes it."""

    name: str
    path: Path
    kind: str
    meta: dict = field(repr=False, default_factory=dict)
    builtin: bool = False

    @property
    def base(self) -> str:
        return split_version(self.name)[0]

    @property
    def version(self) -> int:
        return split_version(self.name)[1]

    @property
    def in_channels(self) -> int:
        return int(self.meta.get("in_channels") or self.meta.get("architecture", {}).get("in_channels") or 1)

    @property
    def modalities(self) -> list[str]:
        """One name per input channel (model.json ``modalities``; ``channel N`` when unnamed)."""
        names = [str(m) for m in self.meta.get("modalities") or []]
        if len(names) != self.in_channels:
            names = [f"channel {i + 1}" for i in range(self.in_channels)]
        return names

    @property
    def labels(self) -> list[dict]:
        """Segments this model paints: [{"name", "value", "color"}], from model.json."""
        out = []
        for entry in self.meta.get("labels") or []:
            if isinstance(entry, dict) and "name" in entry and "value" in entry:
                item = {"name": str(entry["name"]), "value": int(entry["value"])}
                if entry.get("color") is not None:
                    item["color"] = [float(c) for c in entry["color"]]
                out.append(item)
        return out

    @property
    def label_scheme(self) -> dict | None:
        """The engine's label scheme (mode, names, values, paint, colors) the model was trained with."""
        scheme = self.meta.get("provenance", {}).get("config", {}).get("labels")
        return dict(scheme) if isinstance(scheme, dict) else None

    @property
    def preset(self) -> str:
        return str(self.meta.get("preset") or "small")

    @property
    def steps(self) -> int | None:
        steps = self.meta.get("provenance", {}).get("steps")
        return int(steps) if isinstance(steps, (int, float)) else None

    @property
    def sources(self) -> list[str]:
        return [str(s) for s in self.meta.get("sources") or []]

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
    """A model folder's ``model.json`` (format checked); raises :class:`SARLogicError` otherwise."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SARLogicError(f"{folder}: no {MODEL_JSON}, not a SAR model folder") from None
    except (OSError, ValueError) as exc:
        raise SARLogicError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SARLogicError(f"{path}: not a SAR model description (format is not {FORMAT!r})")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise SARLogicError(f"{path}: unknown model kind {kind!r}")
    return ModelInfo(folder.name, folder, kind, meta, builtin)


def check_weights(model: ModelInfo) -> None:
    """The weights file exists and matches the SHA-256 that model.json names (as the engine checks)."""
    weights = model.meta.get("weights") or {}
    file_name = str(weights.get("file") or "weights.safetensors")
    if PurePosixPath(file_name).name != file_name or "\\" in file_name:
        raise SARLogicError(f"{model.path / MODEL_JSON}: the weights file must lie in the model folder")
    path = model.path / file_name
    if not path.is_file():
        raise SARLogicError(f"{path}: missing weights file")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != weights.get("sha256"):
        raise SARLogicError(f"{path}: SHA-256 does not match model.json (truncated or tampered weights)")


class FolderModelStore:
    """Models as folders under ``root`` (the user's, writable) and ``builtin_roots`` (read-only).

    Implements :class:`SARSegmentationLib.protocols.ModelStore`. Nothing is ever overwritten: new
    models and imports get the next free version name.
    """

    def __init__(self, root: str | Path | None = None, builtin_roots: Sequence[str | Path] = ()) -> None:
        self.root = Path(root) if root is not None else models_root()
        self.builtin_roots = [Path(r) for r in builtin_roots]

    # listing
    def _candidates(self) -> list[tuple[Path, bool]]:
        out = []
        for root, builtin in [(self.root, False)] + [(r, True) for r in self.builtin_roots]:
            if root.is_dir():
                out.extend((p, builtin) for p in sorted(root.iterdir()) if (p / MODEL_JSON).is_file())
        return out

    def list(self, kinds: Sequence[str] = ("segmentation",)) -> list[ModelInfo]:
        """Readable models of these kinds: the user's first (by base name, then version), then built-ins."""
        models, seen = [], set()
        for folder, builtin in self._candidates():
            if folder.name in seen:
                continue  # a user model shadows a built-in one of the same name
            try:
                model = read_model(folder, builtin)
            except SARLogicError:
                continue
            if model.kind in kinds:
                models.append(model)
                seen.add(folder.name)
        return sorted(models, key=lambda m: (m.builtin, m.base.lower(), m.version, m.name))

    def get(self, name: str) -> ModelInfo:
        for folder, builtin in self._candidates():
            if folder.name == name:
                return read_model(folder, builtin)
        raise SARLogicError(f"no model named {name!r} in {self.root}")

    # versions
    def _taken(self) -> set[str]:
        names = set()
        for root in [self.root, *self.builtin_roots]:
            if root.is_dir():
                names.update(p.name for p in root.iterdir())
        return names

    def next_version(self, name: str) -> str:
        """The next free version name of ``name``'s model: ``brain`` / ``brain-v2`` -> ``brain-v3``..."""
        base = split_version(safe_name(name))[0]
        taken = self._taken()
        versions = [split_version(n)[1] for n in taken if split_version(n)[0] == base]
        version = max(versions, default=1) + 1
        while f"{base}-v{version}" in taken:
            version += 1
        return f"{base}-v{version}"

    def reserve(self, name: str, new_version: bool = True) -> Path:
        """Create (and so reserve) an empty folder for a new model: ``name`` itself when free and
        ``new_version`` is False, else the next free version. Never returns an existing folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        candidate = safe_name(name)
        if new_version or candidate in self._taken():
            candidate = self.next_version(candidate)
        for _ in range(1000):
            try:
                (self.root / candidate).mkdir()
                return self.root / candidate
            except FileExistsError:  # another process took it meanwhile
                candidate = self.next_version(candidate)
        raise SARLogicError(f"could not find a free model name for {name!r} in {self.root}")

    def training_folder(self, name: str) -> Path:
        """Where the training cases annotated for model ``name`` go (in the user's folder, also for
        a built-in model)."""
        return self.root / safe_name(name) / TRAINING

    # importing
    def import_zip(self, path: str | Path) -> ModelInfo:
        """Unpack a zipped model folder (model.json and weights at the top or in one folder) as a new
        model; checks the format and the weights' SHA-256 first. A taken name gets the next version."""
        path = Path(path)
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SARLogicError(f"{path}: not a readable zip file ({exc})") from None
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            for member in members:
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
                    raise SARLogicError(f"{path}: unsafe path {member.filename!r} in the archive")
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise SARLogicError(f"{path}: the archive holds a symbolic link ({member.filename})")
            jsons = [PurePosixPath(m.filename) for m in members if PurePosixPath(m.filename).name == MODEL_JSON]
            if len(jsons) != 1 or len(jsons[0].parts) > 2:
                raise SARLogicError(f"{path}: expected one {MODEL_JSON} at the top or in one folder, "
                                    f"found {len(jsons)}")
            inner = jsons[0].parent
            name = safe_name(inner.name if inner.parts else path.stem)
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
            try:
                for member in members:
                    relative = PurePosixPath(member.filename)
                    if inner.parts:
                        if relative.parts[: len(inner.parts)] != inner.parts:
                            continue  # files beside the model folder are not part of it
                        relative = PurePosixPath(*relative.parts[len(inner.parts):])
                    target = staging.joinpath(*relative.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink)
                model = read_model(staging)
                check_weights(model)
                target = self.reserve(name, new_version=False)
                target.rmdir()  # reserved, now replaced by the checked folder
                os.replace(staging, target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        return read_model(target)


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU; False when torch is not installed (checked on first use)."""
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver should not stop the CPU path
        return False


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

