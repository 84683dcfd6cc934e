"""The model folder: ``model.json`` (what the network is and where it came from) and the weights as
safetensors, verified by SHA-256 on load. Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .core.errors import BadInput
from .core.files import atomic_path

MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
FORMAT = "sar-model"
FORMAT_VERSION = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(folder: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write weights, then ``model.json`` naming their SHA-256, each atomically (write, then rename).

    A kill between the two renames leaves a model whose hash check fails loudly, never a silently
    wrong one; the training checkpoint beside it is unaffected.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(tensors, tmp)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    meta["weights"] = {"file": WEIGHTS, "sha256": sha256(folder / WEIGHTS)}
    text = json.dumps(meta, indent=2)
    with atomic_path(folder / MODEL_JSON) as tmp:
        Path(tmp).write_text(text)
    return folder


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MODEL_JSON
    if not path.is_file():
        raise BadInput(path, "missing: not a SAR model folder")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"malformed JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadInput(path, f"not a SAR model description (format is not {FORMAT!r})")
    for key in ("architecture", "weights"):
        if key not in meta:
            raise BadInput(path, f"malformed: no {key!r} entry")
    return meta


def load_model(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``model.json`` and the weights, after checking the weights' SHA-256 against it."""
    folder = Path(folder)
    meta = read_meta(folder)
    weights = folder / meta["weights"].get("file", WEIGHTS)
    if not weights.is_file():
        raise BadInput(weights, "missing weights file")
    if sha256(weights) != meta["weights"].get("sha256"):
        raise BadInput(weights, "SHA-256 does not match model.json: truncated, tampered or half-written weights")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise BadInput(weights, f"unreadable safetensors file ({exc})") from None
    return meta, state
