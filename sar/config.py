"""Configuration as data: typed dataclasses, presets, JSON round trip (saved inside every model folder).

Defaults where the SAR paper (Zhang et al., MICCAI 2021) is silent are marked "default chosen here"; the
README lists them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import BadInput
from .io import DEFAULT_NORMALISATION


@dataclass
class NetConfig:
    """3D U-Net widths (five encoder levels, then the last decoder level) and head sizes."""

    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    norm: str = "instance"
    dropout: float = 0.0
    head_hidden: int = 64  # default chosen here: hidden width of the scale and modality MLP heads


@dataclass
class ProxyConfig:
    """SAR's proxy task: multi-scale cubes and Models Genesis corruptions (rates are Genesis' defaults)."""

    input_size: tuple[int, int, int] = (64, 64, 32)  # x, y, z voxels, as Models Genesis
    scales: tuple[float, ...] = (32.0, 64.0, 128.0)  # default chosen here: cube x-extent per scale
    scale_unit: str = "mm"  # "mm", or "fraction" of the volume's smallest (aspect-corrected) extent
    foreground_threshold: float = 0.05  # default chosen here: fraction of the p0.5..p99.5 range
    flip_rate: float = 0.4
    local_rate: float = 0.5
    nonlinear_rate: float = 0.9
    paint_rate: float = 0.9
    inpaint_rate: float = 0.2  # of painted cubes; the rest are out-painted
    shuffle_block: float = 0.1  # largest local-shuffle block side, as a fraction of the cube side
    shuffle_coverage: float = 0.85  # default chosen here: share of blocks shuffled (Genesis' 10000 blocks)

    @property
    def size_zyx(self) -> tuple[int, int, int]:
        x, y, z = self.input_size
        return (z, y, x)


@dataclass
class PretrainConfig:
    """Everything ``sar pretrain`` needs besides data and output folder."""

    preset: str = "small"
    net: NetConfig = field(default_factory=NetConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    normalisation: dict[str, dict] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_NORMALISATION)))
    steps: int = 1000
    batch_size: int = 8
    optimizer: str = "adamw"  # or "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    restore_loss: str = "mse"  # as Models Genesis; or "l1"
    lambda_scale: float = 0.1  # default chosen here
    lambda_adv: float = 0.05  # default chosen here
    adv_warmup: float = 0.3  # default chosen here: DANN ramp of the reversal weight over this share of steps
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    workers: int = 2  # DataLoader processes that read volumes
    pool_size: int = 8  # volumes held in memory at once (bounded cache)
    pool_refresh: int = 4  # every N steps one volume of the pool is replaced by a newly read one
    eval_cubes: int = 256  # fresh cubes scored at the end (proxy_evaluation in model.json)


NESTED = {"net": NetConfig, "proxy": ProxyConfig}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "net": {"features": (4, 8, 8, 16, 16, 4), "head_hidden": 16},
        "proxy": {"input_size": (32, 32, 16)},
        "batch_size": 4,
        "steps": 60,
        "checkpoint_every": 20,
        "log_every": 5,
        "workers": 0,
        "pool_size": 4,
        "lr": 3e-3,
    },
    "small": {"net": {"features": (16, 16, 32, 64, 128, 16)}, "batch_size": 8, "steps": 2000},
    "genesis": {
        "net": {"features": (32, 64, 128, 256, 512, 32), "head_hidden": 256},
        "batch_size": 16,
        "steps": 20000,
        "checkpoint_every": 500,
        "workers": 4,
        "pool_size": 16,
    },
}


def _merge(base: dict, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "normalisation":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type, data: Mapping, where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise BadInput(where, f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}")
    defaults = cls()
    kwargs = {}
    for key, value in data.items():
        if cls is PretrainConfig and key in NESTED:
            kwargs[key] = _build(NESTED[key], value, f"{where}.{key}")
        elif isinstance(value, list) and isinstance(getattr(defaults, key), tuple):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def pretrain_config(preset: str = "small", overrides: Mapping | None = None, where: str = "config") -> PretrainConfig:
    """A preset with overrides (e.g. from ``--config FILE``) applied on top, validated."""
    if preset not in PRESETS:
        raise BadInput("--preset", f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    data = _merge(_merge(to_dict(PretrainConfig()), PRESETS[preset]), overrides or {})
    data["preset"] = preset
    config = _build(PretrainConfig, data, where)
    validate(config, where)
    return config


def validate(config: PretrainConfig, where: str = "config") -> None:
    p = config.proxy
    checks = [
        (len(config.net.features) == 6, "net.features needs 6 widths (5 encoder levels + last decoder level)"),
        (len(p.input_size) == 3 and all(s >= 16 for s in p.input_size), "proxy.input_size needs 3 sides >= 16"),
        (all(s % 16 == 0 for s in p.input_size), "proxy.input_size sides must be multiples of 16 (4 poolings)"),
        (len(p.scales) >= 2 and list(p.scales) == sorted(p.scales), "proxy.scales: at least 2, increasing"),
        (p.scale_unit in ("mm", "fraction"), "proxy.scale_unit is 'mm' or 'fraction'"),
        (p.scale_unit == "mm" or max(p.scales) <= 1.0, "proxy.scales as fractions must be <= 1"),
        (config.steps > 0 and config.batch_size > 0, "steps and batch_size must be positive"),
        (config.optimizer in ("adamw", "sgd"), "optimizer is 'adamw' or 'sgd'"),
        (config.restore_loss in ("mse", "l1"), "restore_loss is 'mse' or 'l1'"),
        (config.checkpoint_every > 0 and config.log_every > 0, "checkpoint_every and log_every must be positive"),
        (config.pool_size > 0 and config.pool_refresh > 0, "pool_size and pool_refresh must be positive"),
    ]
    for rate in ("flip_rate", "local_rate", "nonlinear_rate", "paint_rate", "inpaint_rate", "shuffle_coverage"):
        checks.append((0.0 <= getattr(p, rate) <= 1.0, f"proxy.{rate} must lie in [0, 1]"))
    for ok, message in checks:
        if not ok:
            raise BadInput(where, message)


def to_dict(config: Any) -> dict:
    """Plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(data: Mapping, where: str = "config") -> PretrainConfig:
    config = _build(PretrainConfig, data, where)
    validate(config, where)
    return config


def read_config_file(path: str | Path) -> dict:
    """Overrides from a JSON file (same keys as ``model.json``'s ``config``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(path, "no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(path, "must hold a JSON object")
    return data
