"""sarseg.core.archive: model zips as hostile input. Only the card and the weights it names are written,
checked; absolute and climbing paths, links, encryption, corruption and zip bombs are refused by name,
with nothing left behind."""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from pathlib import Path

import pytest

from sarseg.core import archive
from sarseg.core.archive import unpack_model
from sarseg.core.errors import BadInput

WEIGHTS = b"\x01\x02weights" * 5000


def card(weights: bytes = WEIGHTS) -> bytes:
    """A legacy-format segmentation card (the oldest that still loads) naming ``weights``' SHA-256."""
    return json.dumps({
        "format": "sar-model", "format_version": 1, "kind": "segmentation", "preset": "tiny",
        "architecture": {"name": "resunet3d", "in_channels": 1}, "in_channels": 1, "modalities": ["mr"],
        "labels": [{"name": "tumor", "value": 1, "color": [1, 0, 0]}],
        "weights": {"file": "weights.safetensors", "sha256": hashlib.sha256(weights).hexdigest()}}).encode()


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def unpack(tmp_path: Path, source: Path) -> tuple[str, Path]:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    return unpack_model(source, staging), staging


def test_only_the_card_and_its_weights_are_written(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "m.zip", {"liver/model.json": card(), "liver/weights.safetensors": WEIGHTS,
                                           "liver/notes.txt": b"ignored", "other/x.bin": b"ignored"})
    name, staging = unpack(tmp_path, source)
    assert name == "liver" and sorted(p.name for p in staging.iterdir()) == ["model.json", "weights.safetensors"]
    assert (staging / "weights.safetensors").read_bytes() == WEIGHTS


def refused(tmp_path: Path, source: Path, problem: str) -> None:
    with pytest.raises(BadInput, match=problem) as exc:
        unpack(tmp_path, source)
    assert exc.value.what == str(source)
    assert not (tmp_path / "staging" / "weights.safetensors").exists()


@pytest.mark.parametrize("name", ["/abs/model.json", "../model.json", "a/../../b", "c:/x", "a\\..\\b"])
def test_unsafe_paths_are_refused(tmp_path: Path, name: str) -> None:
    refused(tmp_path, make_zip(tmp_path / "m.zip", {"model.json": card(), name: b"x"}), "unsafe path")


def test_links_and_encrypted_entries_are_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("weights.safetensors")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as z:
        z.writestr("model.json", card())
        z.writestr(link, "/etc/passwd")
    refused(tmp_path, tmp_path / "link.zip", "symbolic link")
    source = make_zip(tmp_path / "enc.zip", {"model.json": card(), "weights.safetensors": WEIGHTS})
    data = bytearray(source.read_bytes())
    for marker in (b"PK\x03\x04", b"PK\x01\x02"):  # set the "encrypted" flag in both headers
        at = data.find(marker)
        while at >= 0:
            offset = at + (6 if marker == b"PK\x03\x04" else 8)
            data[offset] |= 0x1
            at = data.find(marker, at + 4)
    source.write_bytes(bytes(data))
    refused(tmp_path, source, "encrypted")


def test_a_corrupt_member_is_refused(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "crc.zip", {"model.json": card(), "weights.safetensors": WEIGHTS}, zipfile.ZIP_STORED)
    data = bytearray(source.read_bytes())
    at = data.find(WEIGHTS[:9])
    data[at + 100] ^= 0xFF
    source.write_bytes(bytes(data))
    refused(tmp_path, source, "Bad CRC|not a readable zip")


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    zeros = b"\0" * (64 << 20)  # 64 MiB that deflate to about 64 KB
    source = make_zip(tmp_path / "bomb.zip", {"model.json": card(zeros), "weights.safetensors": zeros})
    assert source.stat().st_size < 1 << 20
    refused(tmp_path, source, "compression ratio above 200:1")


def test_weights_over_the_size_limit_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(archive, "MAX_WEIGHTS_BYTES", 1000)
    source = make_zip(tmp_path / "big.zip", {"model.json": card(), "weights.safetensors": WEIGHTS})
    refused(tmp_path, source, "more than the limit of 1,000")


def test_a_member_that_unpacks_to_more_than_it_claims_is_refused(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "lie.zip", {"model.json": card(), "weights.safetensors": WEIGHTS}, zipfile.ZIP_STORED)
    data = bytearray(source.read_bytes())
    at = data.find(b"PK\x01\x02")  # the first central-directory entry is model.json; find the weights'
    at = data.find(b"PK\x01\x02", at + 4)
    claimed = int.from_bytes(data[at + 24:at + 28], "little")
    data[at + 24:at + 28] = (claimed - 100).to_bytes(4, "little")  # "uncompressed size" 100 bytes short
    source.write_bytes(bytes(data))
    refused(tmp_path, source, "more than the|Bad CRC|not a readable zip|does not match")


@pytest.mark.parametrize("members, problem", [
    ({"weights.safetensors": WEIGHTS}, "expected one model.json"),
    ({"a/model.json": card(), "b/model.json": card(), "a/weights.safetensors": WEIGHTS}, "expected one model.json"),
    ({"model.json": card()}, "holds no weights.safetensors"),
    ({"model.json": card(), "weights.safetensors": b"other"}, "SHA-256 does not match"),
    ({"model.json": b"{not json", "weights.safetensors": WEIGHTS}, "malformed JSON"),
])
def test_archives_without_a_sound_model_are_refused(tmp_path: Path, members: dict, problem: str) -> None:
    refused(tmp_path, make_zip(tmp_path / "m.zip", members), problem)


def test_a_file_that_is_no_zip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.zip").write_bytes(b"PK not really")
    refused(tmp_path, tmp_path / "m.zip", "not a readable zip")


def test_corrupt_deflate_data_is_refused(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "deflate.zip", {"model.json": card(), "weights.safetensors": WEIGHTS})
    data = bytearray(source.read_bytes())
    start = data.find(b"PK\x03\x04", 4)  # the weights' local header; its deflate stream follows the name
    for at in range(start + 60, start + 90):
        data[at] ^= 0x5A
    source.write_bytes(bytes(data))
    refused(tmp_path, source, "corrupt|not a readable zip|Bad CRC|does not match")
