"""The models a name stands for: the user's versioned model folders and the built-in ones.

Wherever a model is taken (``--model``, ``--init``, the Slicer modules), a name works as well as a
folder. Names are looked up in the user's models folder (``paths.models()``, writable) and then in the
built-in models shipped with the package (read-only; :func:`builtin_root`). A model's versions are
sibling folders ``<base>``, ``<base>-v2``, ``<base>-v3``...; nothing is ever overwritten: a new model,
an import or a fine-tuning writes the next free version. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import paths
from .card import KINDS, MODEL_JSON, ModelCard, read_card
from .errors import BadInput
from .files import atomic_path

DEFAULT_INIT = "sar-base"  # the built-in SAR-pretrained model fine-tuning starts from unless told otherwise
BUILTIN_PACKAGE_FOLDER = "builtin_models"  # where a built wheel (and the Slicer extension) puts them
_VERSIONED = re.compile(r"^(?P<base>.+?)-v(?P<version>[0-9]+)$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def builtin_root() -> Path | None:
    """The built-in models: ``sarseg/builtin_models`` in an installed package, ``Resources/Models`` in a
    source checkout (one copy in the repository, mapped into the wheel by ``pyproject.toml``)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / BUILTIN_PACKAGE_FOLDER, package.parent / "Resources" / "Models"):
        if candidate.is_dir():
            return candidate
    return None


def safe_name(text: str, fallback: str = "model") -> str:
    """A folder name from free text: letters, digits, '.', '_' and '-' only."""
    name = _SAFE_NAME.sub("_", str(text).strip()).strip("._-")
    return name or fallback


def split_version(name: str) -> tuple[str, int]:
    """``"brain-v3"`` -> ``("brain", 3)``; a name without ``-vN`` is version 1."""
    match = _VERSIONED.match(name)
    return (match.group("base"), int(match.group("version"))) if match else (name, 1)


@dataclass(frozen=True)
class Model:
    """One model folder with its checked card."""

    name: str
    folder: Path
    card: ModelCard
    builtin: bool

    @property
    def base(self) -> str:
        return split_version(self.name)[0]

    @property
    def version(self) -> int:
        return split_version(self.name)[1]


class Registry:
    """The user's models under ``root`` (default ``paths.models()``) and the read-only built-ins under
    ``builtin_roots`` (default: :func:`builtin_root`). A user's model shadows a built-in of the same name."""

    def __init__(self, root: str | os.PathLike | None = None,
                 builtin_roots: Sequence[str | os.PathLike] | None = None) -> None:
        self.root = Path(root) if root is not None else paths.models()
        if builtin_roots is None:
            builtin_roots = [r for r in [builtin_root()] if r is not None]
        self.builtin_roots = [Path(r) for r in builtin_roots]

    # finding
    def _folders(self) -> list[tuple[Path, bool]]:
        out = []
        for root, builtin in [(self.root, False)] + [(r, True) for r in self.builtin_roots]:
            if root.is_dir():
                out.extend((p, builtin) for p in sorted(root.iterdir()) if (p / MODEL_JSON).is_file())
        return out

    def scan(self, kinds: Sequence[str] = KINDS) -> tuple[list[Model], dict[Path, str]]:
        """The readable models of these kinds (the user's by base name and version, then the built-ins),
        and the problem of each folder whose ``model.json`` does not read."""
        models, problems, seen = [], {}, set()
        for folder, builtin in self._folders():
            if folder.name in seen:
                continue
            try:
                card = read_card(folder)
            except BadInput as exc:
                problems[folder] = exc.problem
                continue
            seen.add(folder.name)
            if card.kind in kinds:
                models.append(Model(folder.name, folder, card, builtin))
        models.sort(key=lambda m: (m.builtin, m.base.lower(), m.version, m.name))
        return models, problems

    def list(self, kinds: Sequence[str] = KINDS) -> list[Model]:
        return self.scan(kinds)[0]

    def get(self, name: str) -> Model:
        """The model called ``name``; its card is checked (BadInput names the problem)."""
        for folder, builtin in self._folders():
            if folder.name == name:
                return Model(name, folder, read_card(folder), builtin)
        known = ", ".join(m.name for m in self.list()) or "none yet"
        raise BadInput(name, f"no model of that name (models: {known}; `sarseg models list` shows them)")

    def resolve(self, value: str | os.PathLike) -> Path:
        """The folder ``value`` stands for: a folder holding ``model.json`` as given, else a model name."""
        path = Path(value)
        if (path / MODEL_JSON).is_file() or path.is_dir():
            return path
        text = str(value)
        if os.sep in text or "/" in text or text.startswith("."):
            raise BadInput(value, "no such model folder")
        return self.get(text).folder

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
        version = max((split_version(n)[1] for n in taken if split_version(n)[0] == base), default=1) + 1
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
        raise BadInput(self.root, f"no free model name for {name!r}")

    # zips
    def import_zip(self, archive: str | os.PathLike) -> Model:
        """Unpack a zipped model as a new model (only its checked card and weights are written; see
        ``archive.unpack_model``); a taken name gets the next version."""
        from .archive import unpack_model

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            target = self.reserve(safe_name(unpack_model(Path(archive), staging)), new_version=False)
            target.rmdir()  # reserved, now replaced by the checked folder
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return Model(target.name, target, read_card(target), False)

    def export_zip(self, name: str, archive: str | os.PathLike) -> Path:
        """Write model ``name`` (its card and weights, checked first) as ``ARCHIVE`` holding ``name/``;
        the archive appears whole or not at all, and an existing file is not replaced."""
        model = self.get(name)
        archive = Path(archive)
        if archive.exists():
            raise BadInput(archive, "exists; give a new file name")
        weights = model.card.verify()
        with atomic_path(archive) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as out:
                out.write(model.folder / MODEL_JSON, f"{model.name}/{MODEL_JSON}")
                out.write(weights, f"{model.name}/{weights.name}")
        return archive


def describe(card: ModelCard) -> str:
    """The card for a person (``sarseg models show``, the Slicer modules): inputs, outputs, training,
    validation, intended use."""
    info = card.provenance
    lines = [f"kind: {card.kind}, preset {card.preset or '-'}, {card.architecture.in_channels} input channel(s)"]
    if card.kind == "segmentation":
        lines.append(f"inputs, in this order: {', '.join(card.modalities)}")
        if card.prompts is not None:
            lines.append(f"promptable: {', '.join(card.prompts.channels)} (sarseg segment --points/--prompts, sarseg serve)")
        if card.labels:
            lines.append(f"segments: {', '.join(card.labels.names)} ({card.labels.mode})")
    else:
        lines.append(f"pretrained on: {', '.join(card.sources) or '-'}")
    for key, title in (("input_requirements", "input must be"), ("intended_use", "intended use"),
                       ("training_data", "trained on"), ("licenses", "data licenses"), ("steps", "steps"),
                       ("init", "initialised from"), ("validation", "validation"), ("evidence", "evidence")):
        if key in info:
            lines.append(f"{title}: {_shown(info[key])}")
    return "\n".join(lines)


def _shown(value: object) -> str:
    """A provenance value in words: validation as Dice per region on its cases, lists joined."""
    if isinstance(value, dict) and isinstance(value.get("dice"), dict):
        dice = ", ".join(f"{name} {score:.3f}" for name, score in value["dice"].items() if isinstance(score, (int, float)))
        cases = value.get("cases") if isinstance(value.get("cases"), list) else []
        return f"Dice {dice}" + (f" on {len(cases)} held-back case(s): {', '.join(map(str, cases))}" if cases else "")
    if isinstance(value, dict) and isinstance(value.get("scores"), dict):  # a promptable model's simulated clicks
        rows = [f"{name} {'/'.join(f'{s[k]:.2f}' for k in ('dice_1', 'dice_3', 'dice_5') if isinstance(s.get(k), (int, float)))}"
                for name, s in value["scores"].items() if isinstance(s, dict)]
        return f"Dice after 1/3/5 simulated clicks on held-back cases: {'; '.join(rows)}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(value)
    return value if isinstance(value, str) else json.dumps(value)
