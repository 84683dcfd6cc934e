"""Model folders as zip archives: unpacking a downloaded or shared model, safely.

An archive is hostile input: entries may be absolute or climb out with ``..``, be links, be encrypted
or corrupt, or decompress to far more than they claim (zip bombs). Only two members are ever written:
the model card, read first and checked like any ``model.json``, and the weights file it names, streamed
to disk while its size and SHA-256 are checked against the limits and the card; everything else in
the archive is ignored. Standard library only.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from . import card as cards
from . import paths
from .errors import BadInput

MAX_MEMBERS = 10_000  # entries listed in the archive's directory
MAX_WEIGHTS_BYTES = 2 << 30  # uncompressed weights (SARSEG_MAX_WEIGHTS_BYTES overrides it)
MAX_RATIO = 200  # uncompressed : compressed; real weights compress by less than 2:1


def unpack_model(path: Path, staging: Path) -> str:
    """Write the archive's model card and weights into the empty folder ``staging``, both checked; return
    the model's name (the folder holding model.json in the archive, else the archive's stem)."""
    path, staging = Path(path), Path(staging)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _checked_members(path, archive)
            card_member = _the_card(path, members)
            inner = PurePosixPath(card_member.filename).parent
            (staging / cards.MODEL_JSON).write_bytes(_read(path, archive, card_member, cards.MAX_CARD_BYTES))
            try:
                card = cards.read_card(staging)
            except BadInput as exc:
                raise BadInput(path, f"{card_member.filename}: {exc.problem}") from None
            if card.weights is None:
                raise BadInput(path, "its model.json names no weights file")
            name = str(inner / card.weights.file) if inner.parts else card.weights.file
            weights = next((m for m in members if m.filename == name), None)
            if weights is None:
                raise BadInput(path, f"holds no {name} (the weights its model.json names)")
            _stream(path, archive, weights, staging / card.weights.file, card.weights.sha256)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise BadInput(path, f"is not a readable zip archive, or is corrupt ({exc or type(exc).__name__})") from None
    except (NotImplementedError, RuntimeError) as exc:  # unsupported compression, encryption
        raise BadInput(path, f"cannot be unpacked ({exc})") from None
    except OSError as exc:
        raise BadInput(path, f"cannot be read ({exc.strerror or exc})") from None
    return inner.name if inner.parts else path.stem


def _checked_members(path: Path, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise BadInput(path, f"lists {len(members)} entries; a model archive holds at most {MAX_MEMBERS}")
    for member in members:
        parts = PurePosixPath(member.filename).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename or "\\" in member.filename:
            raise BadInput(path, f"unsafe path {member.filename!r} in the archive")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise BadInput(path, f"the archive holds a symbolic link ({member.filename})")
        if member.flag_bits & 0x1:
            raise BadInput(path, f"{member.filename} is encrypted; export the model again without a password")
    return [m for m in members if not m.is_dir()]


def _the_card(path: Path, members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    found = [m for m in members if PurePosixPath(m.filename).name == cards.MODEL_JSON]
    if len(found) != 1 or len(PurePosixPath(found[0].filename).parts) > 2:
        raise BadInput(path, f"expected one {cards.MODEL_JSON} at the top or in one folder, found {len(found)}")
    return found[0]


def _limit(path: Path, member: zipfile.ZipInfo, most: int) -> None:
    if member.file_size > most:
        raise BadInput(path, f"{member.filename} unpacks to {member.file_size:,} bytes, more than the limit of {most:,}")
    if member.file_size > MAX_RATIO * max(member.compress_size, 1) and member.file_size > 1 << 20:
        raise BadInput(path, f"{member.filename} claims a compression ratio above {MAX_RATIO}:1 (a zip bomb?)")


def _read(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, most: int) -> bytes:
    _limit(path, member, most)
    with archive.open(member) as source:
        data = source.read(most + 1)
    if len(data) > most:
        raise BadInput(path, f"{member.filename} unpacks to more than {most:,} bytes")
    return data


def _stream(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, expected: str) -> None:
    """Copy a member in blocks, counting bytes (never past the limit or the size it claims) and hashing."""
    _limit(path, member, paths.limit("SARSEG_MAX_WEIGHTS_BYTES", MAX_WEIGHTS_BYTES))
    digest, written = hashlib.sha256(), 0
    try:
        with archive.open(member) as source, open(target, "xb") as sink:
            while block := source.read(1 << 20):
                written += len(block)
                if written > member.file_size:
                    raise BadInput(path, f"{member.filename} unpacks to more than the {member.file_size:,} bytes it claims")
                digest.update(block)
                sink.write(block)
        if digest.hexdigest() != expected:
            raise BadInput(path, f"{member.filename}: SHA-256 does not match its model.json (truncated or tampered)")
    except BaseException:
        target.unlink(missing_ok=True)  # no partial weights, whatever stopped the copy
        raise
