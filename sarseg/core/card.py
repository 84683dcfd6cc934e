"""The model card: ``model.json``, what a model folder's network is, how to run it and where it came from.

The one reader and writer of model.json for the engine and the Slicer modules. A card is a file anyone
can edit or download, so every field's type and range is checked on reading, architecture sizes are
bounded before anything is built from them, the weights must be a plain file inside the folder, and
their SHA-256 (read in blocks) must match the card. Standard library only.

Formats: new cards are written as ``"format": "sarseg-model", "format_version": 2``, with a complete
architecture (name, input and output channels, feature widths, residual units, norm; for SAR models
the head width and the numbers of scales and sources). Folders written before the engine was renamed
say ``"format": "sar-model", "format_version": 1``; they load as they are: an architecture without its
output channels gets them from the labels (segmentation) or its input channels (pretrained), and a
card that gives no feature widths can be listed but not built (:meth:`ModelCard.need` says so).

A promptable segmentation model (interactive: clicks and a box) says so in ``prompts``: its guidance
channels, which follow the image channels in the network's input, and their click width. The field is
optional, so every earlier card still reads as a fixed model; a sarseg older than the field refuses a
promptable card (an unknown field) rather than running it without its prompts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields as dataclass_fields
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from . import fields
from .errors import BadInput
from .expects import Expectations
from .files import atomic_path
from .labels import LabelScheme

MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
FORMAT, FORMAT_VERSION = "sarseg-model", 2
LEGACY_FORMATS = (("sar-model", 1),)
KINDS = ("pretrained", "segmentation")
ARCHITECTURES = {"pretrained": "sar-resunet3d", "segmentation": "resunet3d"}  # what each kind's network is
NORMS = ("instance", "batch")
LEVELS = 5  # feature widths: four strided levels and the bottleneck
MAX_CARD_BYTES = 32 << 20
MAX_IN_CHANNELS = 32
MAX_OUT_CHANNELS = 256  # background + the most labels a scheme holds
MAX_FEATURE_WIDTH = 1024  # the widest level (Models Genesis' is 512); a 1024x1024x27 kernel is 113 MB
MAX_RES_UNITS = 8
MAX_HEAD_HIDDEN = 4096
MAX_SCALES = 16
MAX_SOURCES = 64
MAX_PATCH_SIDE = 512
MAX_PATCH_VOXELS = 256 ** 3  # a patch or cube of more voxels would not fit a batch on any GPU
MAX_SW_BATCH = 256
PROMPT_CHANNELS = ("positive", "negative", "box")  # a promptable model's guidance channels, in this order
MAX_CLICK_SIGMA = 50.0  # voxels
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def patch_problem(size: Sequence[Any]) -> str | None:
    """Why ``size`` (x, y, z voxels) cannot be a patch or cube of the U-Net, or None: three sides,
    multiples of 16 (four poolings), each at most ``MAX_PATCH_SIDE`` and ``MAX_PATCH_VOXELS`` in all."""
    if len(size) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        return f"needs 3 integer sides x, y, z (got {fields.show(list(size))})"
    if not all(16 <= s <= MAX_PATCH_SIDE and s % 16 == 0 for s in size):
        return f"sides must be multiples of 16 (4 poolings) from 16 to {MAX_PATCH_SIDE} (got {list(size)})"
    if size[0] * size[1] * size[2] > MAX_PATCH_VOXELS:
        return f"{list(size)} holds more than {MAX_PATCH_VOXELS} voxels (256^3)"
    return None


def _patch(value: Any, where: object, name: str) -> tuple[int, int, int]:
    fields.array(value, where, name, 3, 3)
    problem = patch_problem(value)
    fields.require(problem is None, where, f"{name}: {problem}")
    return tuple(value)  # type: ignore[return-value]


@dataclass
class InferenceConfig:
    """How ``sarseg segment`` runs a model (saved in its model.json, overridable per call)."""

    overlap: float = 0.5
    sw_batch_size: int = 4
    tta: bool = False  # average over flips along each axis
    largest_component: bool = False  # default chosen here: off, tumors can be multifocal
    min_size_mm3: float = 0.0
    fill_holes: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: object, name: str = "inference") -> "InferenceConfig":
        """Settings from a plain dict (missing ones keep their defaults), each type and range checked."""
        fields.mapping(data, where, name, [f.name for f in dataclass_fields(cls)])
        checks = {"overlap": lambda v, n: fields.number(v, where, n, 0.0, 0.99),
                  "sw_batch_size": lambda v, n: fields.integer(v, where, n, 1, MAX_SW_BATCH),
                  "min_size_mm3": lambda v, n: fields.number(v, where, n, 0.0)}
        return cls(**{key: checks.get(key, lambda v, n: fields.boolean(v, where, n))(value, f"{name}.{key}")
                      for key, value in data.items()})


@dataclass(frozen=True)
class PromptSpec:
    """What a promptable model takes besides its image channels: guidance channels after them, in the
    order of :data:`PROMPT_CHANNELS` (Gaussian maps of the positive and negative clicks, ``sigma`` voxels
    wide with peak 1; the box as a 0/1 mask). A model needs the positive clicks or the box to be told
    which lesion to segment."""

    channels: tuple[str, ...] = PROMPT_CHANNELS
    sigma: float = 2.0

    @classmethod
    def from_dict(cls, data: Any, where: object, name: str = "prompts") -> "PromptSpec":
        fields.mapping(data, where, name, ("channels", "sigma"), required=("channels", "sigma"))
        channels = tuple(fields.text(c, where, f"{name}.channels[{i}]", PROMPT_CHANNELS) for i, c
                         in enumerate(fields.array(data["channels"], where, f"{name}.channels", 1, len(PROMPT_CHANNELS))))
        fields.require(list(channels) == [c for c in PROMPT_CHANNELS if c in channels], where,
                       f"{name}.channels must be distinct and in the order {', '.join(PROMPT_CHANNELS)} (got {list(channels)})")
        fields.require("positive" in channels or "box" in channels, where,
                       f"{name}.channels needs 'positive' or 'box' to be told which lesion to segment")
        return cls(channels, fields.number(data["sigma"], where, f"{name}.sigma", 0.1, MAX_CLICK_SIGMA))

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "sigma": self.sigma}


@dataclass(frozen=True)
class Architecture:
    """The network a card describes: ``resunet3d`` (segmentation U-Net) or ``sar-resunet3d`` (that U-Net
    restoring its input, with SAR's scale head and modality discriminator). Sizes are None only in a
    legacy card that never gave them."""

    name: str
    in_channels: int
    out_channels: int
    features: tuple[int, ...] | None = None
    res_units: int | None = None
    norm: str | None = None
    head_hidden: int | None = None  # sar-resunet3d: hidden width of the heads
    scales: int | None = None  # sar-resunet3d: classes of the scale head
    sources: int | None = None  # sar-resunet3d: classes of the discriminator

    @classmethod
    def from_dict(cls, data: Any, where: object, kind: str, labels: LabelScheme | None, legacy: bool) -> "Architecture":
        """A legacy card may give only name and input channels (its outputs then follow from ``labels``,
        or equal its inputs), and its name need not match its kind."""
        fields.require(isinstance(data, dict), where, f"architecture must be a JSON object (got {fields.show(data)})")
        name = fields.text(data.get("name"), where, "architecture.name")
        fields.require(name in ARCHITECTURES.values(), where, f"architecture {name!r} is not one this sarseg version builds "
                                                            f"(it builds {', '.join(ARCHITECTURES.values())})")
        fields.require(legacy or name == ARCHITECTURES[kind], where,
                       f"a {kind} model's architecture is {ARCHITECTURES[kind]!r}, not {name!r}")
        sar = name == "sar-resunet3d"
        sizes = ("features", "res_units", "norm", "out_channels") + (("head_hidden", "scales", "sources") if sar else ())
        fields.mapping(data, where, "architecture", ["name", "in_channels", *sizes],
                       required=["in_channels"] + ([] if legacy else list(sizes)))
        get = data.get
        features = get("features")
        if features is not None:
            features = tuple(fields.integer(w, where, f"architecture.features[{i}]", 1, MAX_FEATURE_WIDTH)
                             for i, w in enumerate(fields.array(features, where, "architecture.features", LEVELS, LEVELS)))
        bounds = {"res_units": (1, MAX_RES_UNITS), "head_hidden": (1, MAX_HEAD_HIDDEN), "scales": (2, MAX_SCALES),
                  "sources": (1, MAX_SOURCES)}
        given = {key: fields.integer(get(key), where, f"architecture.{key}", low, high)
                 for key, (low, high) in bounds.items() if get(key) is not None}
        norm = get("norm")
        in_channels = fields.integer(data["in_channels"], where, "architecture.in_channels", 1, MAX_IN_CHANNELS)
        out_channels = get("out_channels", labels.outputs if labels else in_channels)
        return cls(name, in_channels, fields.integer(out_channels, where, "architecture.out_channels", 1, MAX_OUT_CHANNELS),
                   features, norm=None if norm is None else fields.text(norm, where, "architecture.norm", NORMS), **given)

    def missing(self) -> list[str]:
        """The sizes this card lacks to build its network."""
        needed = ["features", "res_units", "norm"] + (["head_hidden", "scales", "sources"] if self.name == "sar-resunet3d" else [])
        return [key for key in needed if getattr(self, key) is None]

    def to_dict(self) -> dict:
        data = {"name": self.name, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "features": None if self.features is None else list(self.features), "res_units": self.res_units,
                "norm": self.norm, "head_hidden": self.head_hidden, "scales": self.scales, "sources": self.sources}
        return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class Weights:
    """The weights file (a plain name inside the model folder) and its SHA-256."""

    file: str
    sha256: str

    @classmethod
    def from_dict(cls, data: Any, where: object) -> "Weights":
        fields.mapping(data, where, "weights", ("file", "sha256"), required=("file", "sha256"))
        name = fields.text(data["file"], where, "weights.file")
        plain = PurePosixPath(name).name == name and name not in (".", "..") and not any(c in name for c in "\\:\0")
        fields.require(plain, where, f"weights.file {fields.show(name)} must be a plain file name inside the model folder")
        digest = data["sha256"]
        fields.require(isinstance(digest, str) and bool(_SHA256.match(digest)), where,
                       f"weights.sha256 must be 64 lowercase hex digits (got {fields.show(digest)})")
        return cls(name, digest)


_SEGMENTATION = ("modalities", "patch_size", "labels", "label_mode", "inference", "expects", "prompts")
_PRETRAINED = ("sources", "input_size", "scales")
_COMMON = ("format", "format_version", "kind", "preset", "architecture", "in_channels", "normalisation", "provenance", "weights")


@dataclass
class ModelCard:
    """``model.json`` as typed fields. Segmentation models have modalities, patch size, labels and
    inference settings, and promptable ones their ``prompts``; pretrained ones their sources, cube size
    and scales. ``path``: the file it was read from (None until written)."""

    kind: str
    architecture: Architecture
    preset: str | None = None
    normalisation: dict | None = None
    provenance: dict = field(default_factory=dict)
    weights: Weights | None = None
    modalities: tuple[str, ...] = ()
    patch_size: tuple[int, int, int] | None = None
    labels: LabelScheme | None = None
    inference: InferenceConfig | None = None
    expects: Expectations | None = None  # what the input must look like (warned about, not enforced)
    sources: tuple[str, ...] = ()
    input_size: tuple[int, int, int] | None = None
    scales: dict | None = None
    prompts: PromptSpec | None = None
    path: Path | None = field(default=None, compare=False, repr=False)

    @property
    def promptable(self) -> bool:
        return self.prompts is not None

    @property
    def folder(self) -> Path:
        if self.path is None:
            raise ValueError("this model card was not read from or written to a folder")
        return self.path.parent

    @classmethod
    def from_dict(cls, data: Any, where: object) -> "ModelCard":
        """A card from model.json's contents, every field checked (``where`` names the file in errors)."""
        fields.require(isinstance(data, dict), where, "is not a JSON object")
        stamp = (data.get("format"), data.get("format_version"))
        if stamp != (FORMAT, FORMAT_VERSION) and stamp not in LEGACY_FORMATS:
            newer = stamp[0] == FORMAT and isinstance(stamp[1], int) and stamp[1] > FORMAT_VERSION
            fields.require(not newer, where, f"format version {stamp[1]} is newer than this sarseg reads "
                                             f"({FORMAT_VERSION}); update sarseg")
            raise BadInput(where, f"not a SAR model description (format is not {FORMAT!r} version {FORMAT_VERSION} "
                                  f"nor {LEGACY_FORMATS[0][0]!r} version {LEGACY_FORMATS[0][1]})")
        legacy = stamp in LEGACY_FORMATS
        kind = fields.text(data.get("kind"), where, "kind", KINDS)
        segmentation = kind == "segmentation"
        own = _SEGMENTATION if segmentation else _PRETRAINED
        needed = ("kind", "architecture", "weights") if legacy else ("kind", "preset", "architecture", "normalisation", "weights",
                                                                     *(k for k in own if k not in ("label_mode", "expects", "prompts")))
        fields.mapping(data, where, "the card", (*_COMMON, *own), required=needed)
        labels = LabelScheme.from_segments(data.get("labels"), data.get("label_mode"), where) if segmentation else None
        arch = Architecture.from_dict(data["architecture"], where, kind, labels, legacy)
        card = cls(kind, arch, weights=Weights.from_dict(data["weights"], where), labels=labels,
                   preset=_optional(data, "preset", lambda v: fields.text(v, where, "preset", max_len=64)),
                   normalisation=_optional(data, "normalisation", lambda v: normalisation_table(v, where)),
                   provenance=_optional(data, "provenance", lambda v: fields.mapping(v, where, "provenance")) or {},
                   patch_size=_optional(data, "patch_size", lambda v: _patch(v, where, "patch_size")),
                   input_size=_optional(data, "input_size", lambda v: _patch(v, where, "input_size")),
                   inference=_optional(data, "inference", lambda v: InferenceConfig.from_dict(v, where)),
                   expects=_optional(data, "expects", lambda v: Expectations.from_dict(v, where)),
                   scales=_optional(data, "scales", lambda v: _scales(v, where)),
                   prompts=_optional(data, "prompts", lambda v: PromptSpec.from_dict(v, where)),
                   modalities=_names(data.get("modalities", []), where, "modalities", MAX_IN_CHANNELS),
                   sources=_names(data.get("sources", []), where, "sources", MAX_SOURCES))
        card._check_counts(data, where)
        return card

    def _check_counts(self, data: dict, where: object) -> None:
        """The counts that appear twice agree: channels, outputs, modalities, sources, scales."""
        arch = self.architecture
        counts = [("in_channels", fields.integer(data.get("in_channels", arch.in_channels), where, "in_channels"), arch.in_channels)]
        if self.labels is not None:
            counts.append((f"architecture.out_channels for {len(self.labels.names)} {self.labels.mode}",
                           arch.out_channels, self.labels.outputs))
        else:
            counts.append(("architecture.out_channels (a pretrained model restores its input)", arch.out_channels, arch.in_channels))
        guidance = len(self.prompts.channels) if self.prompts is not None else 0
        if self.modalities:
            counts.append((f"the number of modalities{' and prompt channels' if guidance else ''}",
                           len(self.modalities) + guidance, arch.in_channels))
        if self.sources and arch.sources is not None:
            counts.append(("the number of sources", len(self.sources), arch.sources))
        if self.scales is not None and arch.scales is not None:
            counts.append(("the number of scales", len(self.scales["sizes"]), arch.scales))
        for name, got, expected in counts:
            fields.require(got == expected, where, f"{name} is {fields.show(got)}, but the architecture needs {expected}")
        if self.prompts is not None and self.labels is not None:
            fields.require(len(self.labels.names) == 1, where, "a promptable model segments one label, the lesion "
                                                               f"prompted (labels: {', '.join(self.labels.names)})")

    def to_dict(self) -> dict:
        """model.json's contents, in the current format."""
        data: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind, "preset": self.preset,
                                "architecture": self.architecture.to_dict(), "in_channels": self.architecture.in_channels}
        if self.kind == "segmentation":
            data.update(modalities=list(self.modalities), patch_size=None if self.patch_size is None else list(self.patch_size),
                        labels=[{**segment, "values": list(values)} for segment, values
                                in zip(self.labels.segments(), self.labels.values)] if self.labels else None,
                        label_mode=self.labels.mode if self.labels else None,
                        inference=None if self.inference is None else asdict(self.inference),
                        expects=None if self.expects is None else self.expects.to_dict(),
                        prompts=None if self.prompts is None else self.prompts.to_dict())
        else:
            data.update(sources=list(self.sources), input_size=None if self.input_size is None else list(self.input_size),
                        scales=self.scales)
        data.update(normalisation=self.normalisation, provenance=self.provenance,
                    weights=None if self.weights is None else {"file": self.weights.file, "sha256": self.weights.sha256})
        return {k: v for k, v in data.items() if v is not None}

    def write(self, folder: Path) -> Path:
        """Write ``folder/model.json`` atomically; the card then belongs to that folder."""
        if self.weights is None:
            raise ValueError("a model card is written after its weights (it names their SHA-256)")
        path = Path(folder) / MODEL_JSON
        data = self.to_dict()
        ModelCard.from_dict(data, path)  # what is written can be read back
        text = json.dumps(data, indent=2)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        self.path = path
        return path

    def need(self, *names: str, purpose: str = "run it") -> None:
        """``BadInput`` naming model.json when it lacks what ``purpose`` needs (``architecture``: its
        sizes; others: fields a legacy card may leave out)."""
        missing = [n for n in names if n != "architecture" and getattr(self, n) in (None, ())]
        where = self.path or MODEL_JSON
        if "architecture" in names:
            missing += [f"architecture.{key}" for key in self.architecture.missing()]
            expected = ARCHITECTURES[self.kind]
            fields.require(self.architecture.name == expected, where, f"a {self.kind} model's architecture is {expected!r}, "
                                                                    f"not {self.architecture.name!r}: this sarseg cannot {purpose}")
        fields.require(not missing, where, f"has no {', '.join(missing)}: this sarseg cannot {purpose}")

    def require_kind(self, kind: str, purpose: str) -> None:
        """``BadInput`` naming model.json when this is not a ``kind`` model (e.g. segmenting with a pretrained one)."""
        fields.require(self.kind == kind, self.path or MODEL_JSON,
                       f"is a {self.kind!r} model; {purpose} needs a {'fine-tuned' if kind == 'segmentation' else kind} one")

    def verify(self) -> Path:
        """The weights file, after checking it is a plain file in the folder whose SHA-256 matches."""
        if self.weights is None:
            raise ValueError("this model card names no weights")
        weights = self.folder / self.weights.file
        if not weights.exists():
            raise BadInput(weights, "missing weights file")
        fields.require(weights.is_file() and not weights.is_symlink(), weights, "is not a plain file in the model folder")
        fields.require(sha256(weights) == self.weights.sha256, weights,
                       "SHA-256 does not match model.json: truncated, tampered or half-written weights")
        return weights


def read_card(folder: Path | str) -> ModelCard:
    """``folder/model.json`` as a checked :class:`ModelCard`."""
    path = Path(folder) / MODEL_JSON
    if not path.is_file():
        raise BadInput(path, "missing: not a SAR model folder")
    size = path.stat().st_size
    fields.require(size <= MAX_CARD_BYTES, path, f"is {size} bytes; a model card holds at most {MAX_CARD_BYTES}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"malformed JSON ({exc})") from None
    except RecursionError:
        raise BadInput(path, "malformed JSON (nested too deeply)") from None
    card = ModelCard.from_dict(data, path)
    card.path = path
    return card


def _optional(data: dict, key: str, read: Any) -> Any:
    return read(data[key]) if data.get(key) is not None else None


def _names(value: Any, where: object, name: str, most: int) -> tuple[str, ...]:
    return tuple(fields.text(v, where, f"{name}[{i}]", max_len=64) for i, v in enumerate(fields.array(value, where, name, 0, most)))


def normalisation_table(value: Any, where: object) -> dict:
    """``{name: {"kind", "low", "high", "outside"}}`` (a model card's or a config's): names and types; the
    kinds themselves are checked where they are applied (``sarseg.io.Normalisation``)."""
    fields.mapping(value, where, "normalisation")
    fields.require(len(value) <= 64, where, "normalisation holds more than 64 entries")
    for name, entry in value.items():
        fields.mapping(entry, where, f"normalisation.{name}", ("kind", "low", "high", "outside"))
        for key, item in entry.items():
            if key == "kind":
                fields.text(item, where, f"normalisation.{name}.kind", max_len=32)
            else:
                fields.number(item, where, f"normalisation.{name}.{key}")
    return value


def _scales(value: Any, where: object) -> dict:
    fields.mapping(value, where, "scales", ("sizes", "unit"), required=("sizes", "unit"))
    sizes = fields.array(value["sizes"], where, "scales.sizes", 2, MAX_SCALES)
    for i, size in enumerate(sizes):
        fields.number(size, where, f"scales.sizes[{i}]", 1e-6)
    fields.text(value["unit"], where, "scales.unit", ("mm", "fraction"))
    return value
