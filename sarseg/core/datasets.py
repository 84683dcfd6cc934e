"""``dataset.json`` in the Medical Segmentation Decathlon and nnU-Net v2 layouts, read and written once.

A dataset is a list of cases, each with one image reference per channel and an optional label file:

* Decathlon: ``modality`` names the channels; ``training`` lists ``{"image", "label"}`` pairs and ``test``
  images. A multi-modal image is one 4D file holding every channel, so channel k is (that file, k).
* nnU-Net v2: ``channel_names``; case ``C`` is ``imagesTr/C_0000<file_ending>``, ``C_0001``... (one file
  per channel) with its label ``labelsTr/C<file_ending>``; ``imagesTs`` holds unlabeled cases.

Both jobs give a dataset the same meaning: pretraining uses every channel of every case as an unlabeled
volume named by its channel (:meth:`Dataset.volumes`), fine-tuning the labeled cases
(:attr:`Dataset.labeled`). ``labels`` maps label names to values (a tuple for an nnU-Net region);
``sar_label_scheme``, the engine's label scheme that SARPretrain writes, is carried as a plain dict.

A dataset.json is input anyone can edit: every entry must lie inside the dataset's folder (symlinks
resolved), every field has its JSON type, every file named exists, and the file is at most
:data:`MAX_BYTES`; anything else is a ``BadInput`` naming the dataset.json and the field. Standard
library only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Mapping

from .errors import BadInput
from .files import atomic_path

DATASET_JSON = "dataset.json"
MAX_BYTES = 64 * 1024 * 1024
DECATHLON, NNUNET = "decathlon", "nnunetv2"
SCHEME_KEY = "sar_label_scheme"
FILE_ENDING = ".nii.gz"
_INDEX = re.compile(r"0|[1-9][0-9]{0,5}")
_ENDING = re.compile(r"\.[A-Za-z0-9.]{1,15}")
_MISSING = object()


@dataclass(frozen=True)
class ImageRef:
    """One channel of a case: a file, and for a Decathlon file the channel's index along its 4th axis
    (``None``: the file is one 3D volume)."""

    path: str
    channel: int | None = None


@dataclass(frozen=True)
class Case:
    """One case: an image reference per channel, and its label map when it is a training case."""

    name: str
    images: tuple[ImageRef, ...]
    label: str | None = None

    def files(self) -> tuple[str, ...]:
        """The files holding the case's channels, each once, in channel order (a Decathlon case: its 4D file)."""
        return tuple(dict.fromkeys(ref.path for ref in self.images))


@dataclass(frozen=True)
class Dataset:
    """What a dataset.json says, with every file resolved to an absolute path inside its folder."""

    layout: str
    channels: tuple[str, ...]
    cases: tuple[Case, ...]
    labels: dict[str, int | tuple[int, ...]] = field(default_factory=dict)
    label_scheme: dict | None = None
    name: str = ""
    description: str = ""
    file_ending: str = FILE_ENDING

    @property
    def labeled(self) -> tuple[Case, ...]:
        """The cases fine-tuning learns from."""
        return tuple(c for c in self.cases if c.label is not None)

    def volumes(self) -> list[tuple[str, ImageRef]]:
        """(channel name, image) for every channel of every case, labeled or not: pretraining's volumes."""
        return [(name, ref) for case in self.cases for name, ref in zip(self.channels, case.images)]


def nnunet_case(root: str | Path, name: str, channels: int, labeled: bool = True, ending: str = FILE_ENDING) -> Case:
    """Where the nnU-Net v2 layout keeps case ``name``: ``imagesTr``/``labelsTr``, or ``imagesTs`` unlabeled."""
    root = Path(root)
    images = root / ("imagesTr" if labeled else "imagesTs")
    return Case(name, tuple(ImageRef(str(images / f"{name}_{k:04d}{ending}")) for k in range(channels)),
                str(root / "labelsTr" / f"{name}{ending}") if labeled else None)


# -- reading ------------------------------------------------------------------------------------

def read(path: str | Path) -> Dataset:
    """The dataset a Decathlon or nnU-Net v2 dataset.json describes (``BadInput`` for anything malformed)."""
    path = Path(path)
    reader = _Reader(path)
    meta = reader.typed(_load(path), dict, "the top level")
    if "training" in meta:
        return reader.decathlon(meta)
    if "channel_names" in meta:
        return reader.nnunet(meta)
    raise BadInput(path, "is neither a Decathlon dataset.json (no 'training') nor an nnU-Net v2 one (no 'channel_names')")


def _load(path: Path) -> Any:
    """The parsed JSON, refused before parsing when the file is larger than :data:`MAX_BYTES`."""
    try:
        if not path.is_file():  # a folder, or a FIFO that open() would wait on
            raise FileNotFoundError("it is a folder" if path.is_dir() else "no such file")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(MAX_BYTES + 1) if size <= MAX_BYTES else b""
    except (OSError, ValueError) as exc:
        raise BadInput(path, f"cannot read dataset.json ({getattr(exc, 'strerror', None) or exc})") from None
    if max(size, len(data)) > MAX_BYTES:
        raise BadInput(path, f"is larger than {MAX_BYTES // 2**20} MiB; that is no dataset.json")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd nesting or numbers
        raise BadInput(path, f"is not valid JSON ({str(exc)[:200]})") from None


_TYPE_NAMES = ((bool, "true/false"), (dict, "an object"), (list, "an array"), (str, "a string"), ((int, float), "a number"))


def _json_type(value: Any) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), "null")


class _Reader:
    """Checks one dataset.json field by field; every problem names the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.root = path.absolute().parent.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise BadInput(path, f"cannot resolve its folder ({exc})") from None

    def bad(self, problem: str) -> BadInput:
        return BadInput(self.path, problem)

    def typed(self, value: Any, kind: type, name: str) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = next(label for k, label in _TYPE_NAMES if k is kind)
            raise self.bad(f"{name} must be {expected} (got {_json_type(value)})")
        return value

    def get(self, meta: dict, key: str, kind: type, where: str = "", default: Any = _MISSING) -> Any:
        name = f"{where}.{key}" if where else f"field {key!r}"
        if key not in meta:
            if default is _MISSING:
                raise self.bad(f"{name} is missing")
            return default
        return self.typed(meta[key], kind, name)

    def indexed(self, meta: dict, key: str) -> tuple[str, ...]:
        """Channel names keyed "0".."n-1" (``modality``, ``channel_names``)."""
        table = self.get(meta, key, dict)
        if not table:
            raise self.bad(f"field {key!r} names no channel")
        if not all(_INDEX.fullmatch(k) for k in table) or sorted(map(int, table)) != list(range(len(table))):
            keys = [k[:20] for k in sorted(table)[:8]]
            raise self.bad(f"field {key!r} must be keyed by channel numbers 0..{len(table) - 1} (got {keys})")
        names = [self.typed(table[str(i)], str, f"{key}[{str(i)!r}]") for i in range(len(table))]
        if not all(n.strip() for n in names):
            raise self.bad(f"field {key!r} holds an empty channel name")
        return tuple(names)

    def label_value(self, value: Any, name: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.bad(f"{name} must be a label value, a whole number >= 0 (got {value!r:.40})")
        return value

    def optional_fields(self, meta: dict) -> dict[str, Any]:
        return {"name": self.get(meta, "name", str, default=""),
                "description": self.get(meta, "description", str, default=""),
                "label_scheme": self.get(meta, SCHEME_KEY, dict, default=None)}

    def entry(self, value: Any, name: str) -> Path:
        """A relative path from the JSON (absolute paths are refused before anything touches them)."""
        text = self.typed(value, str, name)
        if not text.strip() or "\x00" in text:
            raise self.bad(f"{name} is not a file name ({text!r:.40})")
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).anchor:
            raise self.bad(f"{name} is an absolute path ({text:.200}); entries are relative to the dataset's folder")
        return self.root / text

    def inside(self, target: Path, name: str) -> Path:
        """``target`` with symlinks and ``..`` resolved, refused unless it lies in the dataset's folder."""
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise self.bad(f"{name}: cannot resolve {target} ({exc})") from None
        if not resolved.is_relative_to(self.root):
            raise self.bad(f"{name} ({target}) leads outside the dataset's folder {self.root}")
        return resolved

    def existing(self, target: Path, name: str, what: str) -> str:
        resolved = self.inside(target, name)
        try:
            found = resolved.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise self.bad(f"{name}: {what} {target} does not exist")
        return str(resolved)

    def listed(self, value: Any, name: str, what: str = "image file") -> str:
        """The file a JSON entry names: relative, inside the dataset's folder, existing."""
        return self.existing(self.entry(value, name), name, what)

    def decathlon(self, meta: dict) -> Dataset:
        channels = self.indexed(meta, "modality")
        labels: dict[str, int | tuple[int, ...]] = {}
        for key, name in self.get(meta, "labels", dict, default={}).items():
            if not _INDEX.fullmatch(key):
                raise self.bad(f"field 'labels' must be keyed by label values (got {key!r:.40})")
            self.typed(name, str, f"labels[{key!r}]")
            if name in labels:
                raise self.bad(f"field 'labels' names {name!r} twice")
            labels[name] = int(key)
        cases = []
        for i, item in enumerate(self.get(meta, "training", list)):
            where = f"training[{i}]"
            self.typed(item, dict, where)
            image = self.listed(self.get(item, "image", str, where), f"{where}.image")
            label = self.listed(self.get(item, "label", str, where), f"{where}.label", "label file")
            cases.append(self.decathlon_case(image, len(channels), label))
        for i, item in enumerate(self.get(meta, "test", list, default=[])):
            where = f"test[{i}]"
            value = self.get(item, "image", str, where) if isinstance(item, dict) else item
            cases.append(self.decathlon_case(self.listed(value, where), len(channels)))
        return Dataset(DECATHLON, channels, tuple(cases), labels, **self.optional_fields(meta))

    @staticmethod
    def decathlon_case(image: str, channels: int, label: str | None = None) -> Case:
        name = re.sub(r"(\.nii\.gz|\.[^.]*)$", "", Path(image).name)
        return Case(name, tuple(ImageRef(image, k) for k in range(channels)), label)

    def nnunet(self, meta: dict) -> Dataset:
        channels = self.indexed(meta, "channel_names")
        ending = self.get(meta, "file_ending", str, default=FILE_ENDING)
        if not _ENDING.fullmatch(ending):
            raise self.bad(f"field 'file_ending' must be a file ending such as '.nii.gz' (got {ending!r:.40})")
        labels: dict[str, int | tuple[int, ...]] = {}
        for name, value in self.get(meta, "labels", dict, default={}).items():
            where = f"labels[{name!r:.40}]"
            if isinstance(value, list):
                labels[name] = tuple(self.label_value(v, where) for v in value)
                if not labels[name]:
                    raise self.bad(f"{where} lists no label value")
            else:
                labels[name] = self.label_value(value, where)
        cases = self.nnunet_cases(len(channels), True, ending) + self.nnunet_cases(len(channels), False, ending)
        return Dataset(NNUNET, channels, tuple(cases), labels, file_ending=ending, **self.optional_fields(meta))

    def nnunet_cases(self, channels: int, labeled: bool, ending: str) -> list[Case]:
        """The cases whose first channel ``NAME_0000<ending>`` is in ``imagesTr`` (labeled) or ``imagesTs``."""
        images = "imagesTr" if labeled else "imagesTs"
        folder = self.inside(self.root / images, images)
        first = f"_0000{ending}"
        try:
            names = sorted(p.name[: -len(first)] for p in folder.iterdir() if p.name.endswith(first) and p.name != first)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self.bad(f"cannot list {folder} ({exc.strerror or exc})") from None
        cases = []
        for name in names:
            where = f"case {name!r}"
            layout = nnunet_case(self.root, name, channels, labeled, ending)
            refs = tuple(ImageRef(self.existing(Path(ref.path), where, f"channel {k} file"))
                         for k, ref in enumerate(layout.images))
            label = self.existing(Path(layout.label), where, "label file") if layout.label else None
            cases.append(Case(name, refs, label))
        return cases


# -- writing ------------------------------------------------------------------------------------

def write(path: str | Path, dataset: Dataset, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``dataset`` as ``path`` (atomically) in its layout; ``extra``: further top-level keys.

    Every file must lie in ``path``'s folder; an nnU-Net v2 case must sit where the layout puts it
    (:func:`nnunet_case`), a Decathlon case be one file holding channels 0..n-1."""
    path = Path(path)
    root = path.absolute().parent.resolve()
    meta: dict[str, Any] = {"name": dataset.name, "description": dataset.description}
    if dataset.layout == DECATHLON:
        meta.update(_decathlon_fields(path, root, dataset))
    elif dataset.layout == NNUNET:
        meta.update(_nnunet_fields(path, root, dataset))
    else:
        raise BadInput(path, f"unknown dataset layout {dataset.layout!r} (write {DECATHLON} or {NNUNET})")
    if dataset.label_scheme is not None:
        meta[SCHEME_KEY] = dataset.label_scheme
    meta.update(extra or {})
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def _relative(path: Path, root: Path, file: str) -> str:
    try:
        return "./" + Path(file).resolve().relative_to(root).as_posix()
    except ValueError:
        raise BadInput(path, f"{file} lies outside the dataset's folder {root}") from None


def _decathlon_fields(path: Path, root: Path, dataset: Dataset) -> dict[str, Any]:
    for case in dataset.cases:
        if len(case.files()) != 1 or [r.channel for r in case.images] != list(range(len(dataset.channels))):
            raise BadInput(path, f"case {case.name!r}: a Decathlon case is one file holding channels "
                                 f"0..{len(dataset.channels) - 1}")
    if not all(isinstance(v, int) for v in dataset.labels.values()):
        raise BadInput(path, "a Decathlon dataset.json gives each label one value (no regions)")
    labeled = dataset.labeled
    test = [c for c in dataset.cases if c.label is None]
    return {
        "tensorImageSize": "4D" if len(dataset.channels) > 1 else "3D",
        "modality": {str(i): name for i, name in enumerate(dataset.channels)},
        "labels": {str(v): name for name, v in sorted(dataset.labels.items(), key=lambda kv: kv[1])},
        "numTraining": len(labeled),
        "numTest": len(test),
        "training": [{"image": _relative(path, root, c.files()[0]), "label": _relative(path, root, c.label)} for c in labeled],
        "test": [_relative(path, root, c.files()[0]) for c in test],
    }


def _nnunet_fields(path: Path, root: Path, dataset: Dataset) -> dict[str, Any]:
    for case in dataset.cases:
        layout = nnunet_case(root, case.name, len(dataset.channels), case.label is not None, dataset.file_ending)
        files = [case.label, *(r.path for r in case.images)]
        expected = [layout.label, *(r.path for r in layout.images)]
        if [Path(f).resolve() if f else f for f in files] != [Path(f).resolve() if f else f for f in expected]:
            raise BadInput(path, f"case {case.name!r} is not where the nnU-Net v2 layout puts it ({expected[1]})")
    return {
        "channel_names": {str(i): name for i, name in enumerate(dataset.channels)},
        "labels": {name: list(v) if isinstance(v, tuple) else v for name, v in dataset.labels.items()},
        "numTraining": len(dataset.labeled),
        "file_ending": dataset.file_ending,
    }
