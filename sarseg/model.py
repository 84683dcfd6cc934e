"""The model folder's torch side: the weights as safetensors, written and read through the model card
(:mod:`sarseg.core.card`, which owns ``model.json``), and the network the card describes. The weights
are bound to that network: tensors whose names or shapes differ from it are refused before they are
loaded. Nothing here unpickles.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from .config import NetConfig
from .core.card import WEIGHTS, ModelCard, Weights, read_card, sha256
from .core.errors import BadInput
from .core.files import write_bytes
from .nets import SARNet, UNet3D


def net_config(card: ModelCard, base: NetConfig | None = None) -> NetConfig:
    """``base`` (default settings when None) with the widths, depth and norm of the card's architecture."""
    card.need("architecture", purpose="build its network")
    arch = card.architecture
    sizes = {"features": arch.features, "res_units": arch.res_units, "norm": arch.norm}
    if arch.head_hidden is not None:
        sizes["head_hidden"] = arch.head_hidden
    return dataclasses.replace(base or NetConfig(), **sizes)


def build_net(card: ModelCard) -> torch.nn.Module:
    """The untrained network of the card's architecture (built on the current default device)."""
    arch = card.architecture
    if arch.name == "sar-resunet3d":
        return SARNet(arch.in_channels, net_config(card), arch.scales, arch.sources)
    return UNet3D(arch.in_channels, arch.out_channels, net_config(card))


def save_model(folder: Path, state: dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Write the weights, then ``model.json`` naming their SHA-256, each atomically (write, then rename).

    A kill between the two renames leaves a model whose hash check fails loudly, never a silently
    wrong one; the training checkpoint beside it is unaffected.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    write_bytes(folder / WEIGHTS, save(tensors))
    card.weights = Weights(WEIGHTS, sha256(folder / WEIGHTS))
    card.write(folder)
    return folder


def load_weights(card: ModelCard) -> dict[str, torch.Tensor]:
    """The weights of a card read from its folder: SHA-256 checked, then every tensor's name and shape
    against the card's architecture (from the file's header, before any tensor is read); stored in fp16
    or bf16 (the built-in models, half the size), they are returned as float32."""
    weights = card.verify()
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in build_net(card).state_dict().items()}
    try:
        with safe_open(str(weights), "pt") as handle:
            found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        state = None
        problem = _mismatch(expected, found)
        if problem is None:
            state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise BadInput(weights, f"unreadable safetensors file ({exc})") from None
    if problem is not None:
        raise BadInput(weights, f"does not fit the architecture in model.json ({problem})")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # fp16/bf16 files compute in fp32


def _mismatch(expected: dict[str, tuple], found: dict[str, tuple]) -> str | None:
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing:
        return f"{len(missing)} tensor(s) missing, first {missing[0]!r}"
    if extra:
        return f"{len(extra)} tensor(s) it does not have, first {extra[0]!r}"
    for key, shape in expected.items():
        if found[key] != shape:
            return f"tensor {key!r} has shape {list(found[key])}, the architecture needs {list(shape)}"
    return None


def load_model(folder: Path) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """A model folder's card and weights, both checked."""
    card = read_card(folder)
    return card, load_weights(card)
