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

from .core.card import MAX_FEATURE_WIDTH, MAX_RES_UNITS, InferenceConfig, PromptSpec, normalisation_table, patch_problem
from .core.errors import BadInput
from .core.labels import SCHEMES, LabelScheme
from .io import DEFAULT_NORMALISATION, Normalisation


@dataclass
class NetConfig:
    """Residual 3D U-Net widths (four strided levels and the bottleneck), residual depth, head sizes."""

    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    res_units: int = 2  # convolutions per encoder residual unit (MONAI's UNet num_res_units)
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
class TrainConfig:
    """Settings every training job shares (pretraining and fine-tuning)."""

    preset: str = "small"
    net: NetConfig = field(default_factory=NetConfig)
    normalisation: dict[str, dict] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_NORMALISATION)))
    steps: int = 1000
    batch_size: int = 8
    optimizer: str = "adamw"  # or "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    workers: int = 2  # DataLoader processes that read volumes


SCALE_VIEWS = ("corrupted", "clean", "light")


@dataclass
class PretrainConfig(TrainConfig):
    """Everything ``sarseg pretrain`` needs besides data and output folder."""

    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    restore_loss: str = "mse"  # as Models Genesis; or "l1"
    lambda_scale: float = 0.1  # default chosen here
    # default chosen here: what the scale head reads through the shared encoder: "corrupted" (the
    # restoration input), "clean" (the uncorrupted cube, an extra encoder pass) or "light" (the clean cube
    # through Genesis' non-linear intensity map alone). On unseen volumes the head learns only from the
    # clean cube (0.62; 0.80 with scales 16, 48, 144 mm; chance 0.33), but fine-tuning from those encoders
    # was 0.12 Dice worse than from restoration alone, the corrupted view's level with it
    # (docs/bench-ssl/README.md, benchmarks/ssl_mechanisms.py)
    scale_view: str = "corrupted"
    lambda_adv: float = 0.05  # default chosen here
    adv_warmup: float = 0.3  # default chosen here: DANN ramp of the reversal weight over this share of steps
    pool_size: int = 8  # volumes held in memory at once (bounded cache)
    pool_refresh: int = 4  # every N steps one volume of the pool is replaced by a newly read one
    eval_cubes: int = 256  # fresh cubes scored at the end (proxy_evaluation in model.json)


# From scratch, MR (and unnamed) channels are z-scored over the voxels above their minimum, those at it set to
# 0 (nnU-Net's rule for MR, with its nonzero mask), not percentiles mapped to [0, 1] (docs/bench-ssl, "The
# scratch baseline"); a pretrained model brings its own normalisation.
FINETUNE_NORMALISATION: dict[str, dict] = {**DEFAULT_NORMALISATION, "mr": {"kind": "zscore", "outside": 0.0},
                                           "default": {"kind": "zscore", "outside": 0.0}}


@dataclass
class FinetuneConfig(TrainConfig):
    """Everything ``sarseg finetune`` needs besides data, initial model and output folder."""

    patch_size: tuple[int, int, int] = (64, 64, 32)  # x, y, z voxels
    labels: LabelScheme = field(default_factory=LabelScheme)
    modalities: tuple[str, ...] = ()  # one name per channel (picks normalisation); default "default"
    loss: str = "dice_ce"
    pos_fraction: float = 0.33  # as nnU-Net: a third of the patches centred on a labeled voxel
    samples_per_case: int = 2  # patches cropped per case drawn; a step trains on batch_size of them (surplus dropped)
    outside_fraction: float = 0.1  # default chosen here (docs/bench-ssl): patches centred outside the body
    intensity_jitter: float = 0.0  # per-channel scale 1 +- j, shift +- j std; off: it cost 0.04-0.05 whole-tumor Dice on two development folds (docs/bench-ssl)
    affine_prob: float = 0.0  # share of patches rotated and zoomed (sarseg.finetune.spatial_augmentation)
    val_fraction: float = 0.2  # share of cases held out for model selection (at least one, when any)
    min_train_cases: int = 3  # default chosen here: hold cases out only while this many remain to train on
    val_every: int = 200  # default chosen here: steps between validations (on crops around the labels)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    lr: float = 3e-4  # default chosen here: gentler than pretraining, the encoder is already trained
    normalisation: dict[str, dict] = field(default_factory=lambda: json.loads(json.dumps(FINETUNE_NORMALISATION)))

    @property
    def patch_zyx(self) -> tuple[int, int, int]:
        x, y, z = self.patch_size
        return (z, y, x)

    @property
    def in_channels(self) -> int:
        """The network's input channels."""
        return len(self.modalities)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "net": {"features": (8, 16, 32, 64, 128), "res_units": 1, "head_hidden": 16},
        "proxy": {"input_size": (32, 32, 16)},
        "batch_size": 4,
        "steps": 60,
        "checkpoint_every": 20,
        "log_every": 5,
        "workers": 0,
        "pool_size": 4,
        "lr": 3e-3,
    },
    "small": {"net": {"features": (16, 32, 64, 128, 256)}, "batch_size": 8, "steps": 2000},
    "genesis": {
        "net": {"features": (32, 64, 128, 256, 512), "head_hidden": 256},
        "batch_size": 16,
        "steps": 20000,
        "checkpoint_every": 500,
        "workers": 4,
        "pool_size": 16,
    },
}


def merge(base: dict, override: Mapping) -> dict:
    """``override`` on top of ``base``, nested settings merged key by key (``labels`` and ``normalisation``
    are replaced whole)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key not in ("normalisation", "labels"):
            out[key] = merge(out[key], value)
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
        default = getattr(defaults, key)
        if isinstance(default, (LabelScheme, InferenceConfig, PromptSpec)):  # they check their own fields
            kwargs[key] = type(default).from_dict(value, where, key)
        elif dataclasses.is_dataclass(default) or isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise BadInput(where, f"{key} must be an object of settings (got {type(value).__name__})")
            kwargs[key] = dict(value) if isinstance(default, dict) else _build(type(default), value, f"{where}.{key}")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise BadInput(where, f"{key} must be a list (got {type(value).__name__})")
            kwargs[key] = _tuples(list(value))
        else:
            kwargs[key] = _scalar(key, value, default, where)
    return cls(**kwargs)


def _scalar(key: str, value: Any, default: Any, where: str) -> Any:
    """``value`` when it has the type of the setting's default (an integer also serves as a float)."""
    kind = type(default)
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
    if not ok:
        raise BadInput(where, f"{key} must be {kind.__name__} like its default {default!r} (got {value!r})")
    return float(value) if kind is float else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"net": PRESETS["tiny"]["net"], "patch_size": (64, 64, 64), "batch_size": 2, "steps": 100,
             "val_every": 25, "checkpoint_every": 25, "log_every": 5, "workers": 0, "lr": 1e-3},
    "small": {"net": PRESETS["small"]["net"], "batch_size": 2, "steps": 1000},
    "genesis": {"net": PRESETS["genesis"]["net"], "batch_size": 2, "steps": 5000, "checkpoint_every": 250,
                "val_every": 500},
}


def _make(cls: type, presets: Mapping[str, dict], preset: str, overrides: Mapping | None, where: str) -> Any:
    if preset not in presets:
        raise BadInput("--preset", f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    data = merge(merge(to_dict(cls()), presets[preset]), overrides or {})
    data["preset"] = preset
    config = _build(cls, data, where)
    validate(config, where)
    return config


def pretrain_config(preset: str = "small", overrides: Mapping | None = None, where: str = "config") -> PretrainConfig:
    """A preset with overrides (e.g. from ``--config FILE``) applied on top, validated."""
    return _make(PretrainConfig, PRESETS, preset, overrides, where)


def finetune_config(preset: str = "small", overrides: Mapping | None = None, where: str = "config") -> FinetuneConfig:
    return _make(FinetuneConfig, FINETUNE_PRESETS, preset, overrides, where)


def validate(config: TrainConfig, where: str = "config") -> None:
    for name, entry in normalisation_table(config.normalisation, where).items():
        try:
            Normalisation(**entry)
        except BadInput as error:
            raise BadInput(where, f"normalisation.{name}: {error.problem}") from None
    checks = [
        (len(config.net.features) == 5, "net.features needs 5 widths (4 strided levels + bottleneck)"),
        (all(1 <= w <= MAX_FEATURE_WIDTH for w in config.net.features), f"net.features must lie in 1..{MAX_FEATURE_WIDTH}"),
        (1 <= config.net.res_units <= MAX_RES_UNITS, f"net.res_units must lie in 1..{MAX_RES_UNITS}"),
        (config.steps > 0 and config.batch_size > 0, "steps and batch_size must be positive"),
        (config.optimizer in ("adamw", "sgd"), "optimizer is 'adamw' or 'sgd'"),
        (config.checkpoint_every > 0 and config.log_every > 0, "checkpoint_every and log_every must be positive"),
        (config.workers >= 0, "workers must be 0 (read in the main process) or more"),
    ]
    if isinstance(config, PretrainConfig):
        p = config.proxy
        checks += [
            (patch_problem(p.input_size) is None, f"proxy.input_size: {patch_problem(p.input_size)}"),
            (len(p.scales) >= 2 and list(p.scales) == sorted(p.scales), "proxy.scales: at least 2, increasing"),
            (p.scale_unit in ("mm", "fraction"), "proxy.scale_unit is 'mm' or 'fraction'"),
            (p.scale_unit == "mm" or max(p.scales) <= 1.0, "proxy.scales as fractions must be <= 1"),
            (config.restore_loss in ("mse", "l1"), "restore_loss is 'mse' or 'l1'"),
            (config.scale_view in SCALE_VIEWS, f"scale_view is one of {', '.join(SCALE_VIEWS)}"),
            (config.pool_size > 0 and config.pool_refresh > 0, "pool_size and pool_refresh must be positive"),
        ]
        for rate in ("flip_rate", "local_rate", "nonlinear_rate", "paint_rate", "inpaint_rate", "shuffle_coverage"):
            checks.append((0.0 <= getattr(p, rate) <= 1.0, f"proxy.{rate} must lie in [0, 1]"))
    if isinstance(config, FinetuneConfig):
        checks += [
            (patch_problem(config.patch_size) is None, f"patch_size: {patch_problem(config.patch_size)}"),
            (0.0 <= config.pos_fraction <= 1.0 and 0.0 <= config.val_fraction < 1.0, "pos_fraction, val_fraction in [0, 1)"),
            (0.0 <= config.outside_fraction <= 1.0 - config.pos_fraction + 1e-9, "outside_fraction in [0, 1 - pos_fraction]"),
            (config.min_train_cases >= 1 and config.val_every >= 1, "min_train_cases and val_every must be at least 1"),
            (config.loss in ("dice_ce", "dice", "ce"), "loss is dice_ce, dice or ce"),
            (0.0 <= config.affine_prob <= 1.0, "affine_prob must lie in [0, 1]"),
        ]
    if isinstance(config, PromptableConfig):
        checks += [
            (len(config.labels.names) == 1, f"a promptable model segments one label (labels: {', '.join(config.labels.names)})"),
            (0.0 <= config.box_probability <= 1.0 and 0.0 <= config.box_jitter <= 1.0, "box_probability, box_jitter in [0, 1]"),
            (0 <= config.max_corrections <= MAX_CORRECTIONS, f"max_corrections must lie in 0..{MAX_CORRECTIONS}"),
        ]
    for ok, message in checks:
        if not ok:
            raise BadInput(where, message)


def to_dict(config: Any) -> dict:
    """Plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(data: Mapping, where: str = "config", cls: type = PretrainConfig) -> Any:
    """A config saved by ``to_dict`` (in model.json or a checkpoint), validated."""
    config = _build(cls, data, where)
    validate(config, where)
    return config


def read_config_file(path: str | Path) -> dict:
    """Overrides from a JSON file (same keys as ``model.json``'s ``config``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(path, "no such config file") from None
    except OSError as exc:
        raise BadInput(path, f"cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(path, "must hold a JSON object")
    return data


MAX_CORRECTIONS = 20


@dataclass
class PromptableConfig(FinetuneConfig):
    """``sarseg finetune --promptable``: a segmentation network that also takes clicks and a box (guidance
    channels after the image channels), trained with simulated prompts (``sarseg.interactive``)."""

    labels: LabelScheme = field(default_factory=lambda: SCHEMES["binary"])  # one label: the lesion prompted
    prompts: PromptSpec = field(default_factory=PromptSpec)  # guidance channels; clicks 2 voxels wide (MONAI deepgrow's)
    box_probability: float = 0.5  # default chosen here: share of first prompts that are a box rather than a click
    box_jitter: float = 0.1  # default chosen here: each side of a box moves up to this share of the lesion's extent
    max_corrections: int = 4  # default chosen here: corrective clicks simulated before a step, 0..max (DeepEdit-style)
    pos_fraction: float = 0.9  # default chosen here: most patches hold a lesion to prompt

    @property
    def in_channels(self) -> int:
        return len(self.modalities) + len(self.prompts.channels)


def promptable_config(preset: str = "small", overrides: Mapping | None = None, where: str = "config") -> PromptableConfig:
    return _make(PromptableConfig, FINETUNE_PRESETS, preset, overrides, where)
