"""``sarseg finetune``: a segmentation network from a pretrained SAR model (encoder and decoder kept but for
the top level, which restored intensities; proxy heads dropped) or from scratch, trained with Dice +
cross-entropy on patches that oversample the tumor.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import monai
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import (Compose, DeleteItemsd, RandAffined, RandCropByLabelClassesd, RandFlipd, RandScaleIntensityd,
                              RandStdShiftIntensityd, SpatialPadd, Transform)
from monai.transforms.utils import generate_spatial_bounding_box
from torch.utils.data import RandomSampler

from . import __version__
from .config import FinetuneConfig, PromptableConfig, from_dict, to_dict
from .core import datasets
from .core.card import Architecture, ModelCard, read_card
from .core.errors import BadInput
from .core.files import writing
from .core.labels import LabelScheme
from .infer import normalise_channels, predict
from .io import body_mask, read_image, read_label
from .metrics import evaluate_maps
from .model import load_model, net_config, save_model
from .nets import UNet3D
from .train import CHECKPOINT, Distributed, Trainer, resume_state


@dataclass(frozen=True)
class Case:
    """One labeled case: its channels' files and its label map."""

    images: tuple[str, ...]
    label: str


def parse_cases(images: Sequence[str], labels: Sequence[str]) -> list[Case]:
    """Cases from ``--images`` (channels joined by commas) and ``--labels`` in the same order."""
    if len(images) != len(labels):
        raise BadInput("--labels", f"{len(labels)} label file(s) for {len(images)} case(s); give one per case, in order")
    return [Case(tuple(i.split(",")), label) for i, label in zip(images, labels)]


def cases_from_dataset(path: Path) -> tuple[list[Case], tuple[str, ...]]:
    """The labeled cases and channel names of a Decathlon or nnU-Net v2 dataset.json (``core/datasets.py``);
    a case's files hold its channels in order (a Decathlon 4D file: all of them)."""
    dataset = datasets.read(path)
    return [Case(c.files(), c.label) for c in dataset.labeled], dataset.channels


def auto_scheme(cases: Sequence[Case]) -> LabelScheme:
    """Plain classes, one per label value found in the training labels."""
    return LabelScheme.auto((v for c in cases for v in np.unique(read_label(c.label)).tolist()), cases[0].label)


class LoadCase(Transform):
    """Read a case, normalise its channels and encode its label for training (MONAI caches the result)."""

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config

    def __call__(self, case: dict) -> dict:
        image = read_image(case["images"])
        volume = normalise_channels(image, self.config.modalities, self.config.normalisation)
        label = read_label(case["label"], image.geometry)
        self.config.labels.check_values(label, case["label"])
        target, foreground = self.config.labels.training_target(label)
        # where patches are centred: 0 outside the body (every channel at its minimum: padding, air), 1 body, 2 labeled
        where = np.maximum(body_mask(image.array)[None].astype(np.uint8), 2 * foreground)
        return {"image": torch.from_numpy(volume), "target": torch.from_numpy(target),
                "fg": torch.from_numpy(foreground), "where": torch.from_numpy(where), "label": label,
                "spacing": image.geometry.spacing[::-1], "name": case["label"]}


def init_prefix(card: ModelCard | None) -> str:
    """Where the U-Net's weights sit in the initial model's state: a pretrained SAR model keeps them in ``backbone.``."""
    return "backbone." if card is not None and card.kind == "pretrained" else ""


def fill_state(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], prefix: str) -> dict[str, list[str]]:
    """Fill the state dict ``own`` from a model folder's ``state`` where names and shapes match.

    The first convolution is widened to the new channel count by repeating its weights divided by the
    count (a one-channel SAR model then sees, e.g., FLAIR + T1c); the output head is kept only when it
    fits and the source is a segmentation model (a pretrained model's head restores intensities, which
    as logits would mark the whole body). Returns which keys were copied, adapted and left at
    initialisation.
    """
    report: dict[str, list[str]] = {"copied": [], "adapted": [], "initialised": []}
    for key, value in own.items():
        source = None if prefix and key.startswith("head.") else state.get(prefix + key)
        if source is not None and source.shape == value.shape:
            own[key] = source
            report["copied"].append(key)
        elif (source is not None and key.startswith("encoder.0.") and source.dim() == 5 and source.shape[1] == 1
              and source.shape[0] == value.shape[0]):
            own[key] = source.repeat(1, value.shape[1], 1, 1, 1) / value.shape[1]
            report["adapted"].append(key)
        else:
            report["initialised"].append(key)
    return report


def transfer_weights(net: UNet3D, state: dict[str, torch.Tensor], prefix: str) -> dict[str, list[str]]:
    """Copy what :func:`fill_state` can from ``state`` into ``net``; returns its report."""
    own = net.state_dict()
    report = fill_state(own, state, prefix)
    net.load_state_dict(own)
    return report


def check_init(config: FinetuneConfig, init: str, card: ModelCard, state: dict[str, torch.Tensor],
               allow_partial: bool, main: bool) -> None:
    """Say on stderr what fine-tuning takes from ``init``; refuse an encoder that is not wholly copied
    (or adapted) unless ``allow_partial``: a random encoder is not fine-tuning a pretrained model."""
    with torch.device("meta"):  # names and shapes only
        own = UNet3D(config.in_channels, config.labels.outputs, config.net).state_dict()
    report = fill_state(own, state, init_prefix(card))
    encoder = [k for k in own if k.startswith("encoder.")]
    left = [k for k in report["initialised"] if k.startswith("encoder.")]
    counts = (f"copied {len(report['copied'])} tensors, adapted {len(report['adapted'])}, initialised "
              f"{len(report['initialised'])} (encoder: {len(encoder) - len(left)} of {len(encoder)} taken)")
    if left and not allow_partial:
        taken = "none" if len(left) == len(encoder) else f"only {len(encoder) - len(left)}"
        raise BadInput(init, f"{taken} of the {len(encoder)} encoder tensors fit this fine-tuning ({counts}; e.g. "
                             f"{left[0]!r} would start at random: other channels or widths); give --allow-partial-init "
                             "to fine-tune anyway")
    if main:
        print(f"sarseg: --init {init}: {counts}", file=sys.stderr, flush=True)


def load_init(init: str, config: FinetuneConfig) -> tuple[FinetuneConfig, ModelCard | None, dict | None]:
    """The starting point: the pretrained (or earlier fine-tuned) model's architecture and normalisation."""
    if init == "scratch":
        return config, None, None
    card, state = load_model(Path(init))
    config.net = net_config(card, config.net)
    config.normalisation = card.normalisation or config.normalisation
    return config, card, state


def model_meta(config: FinetuneConfig, init: str, init_meta: ModelCard | None, train: Sequence[Case], val: Sequence[Case],
               step: int, best: dict, started: str) -> ModelCard:
    """The card of a segmentation model."""
    net = config.net
    return ModelCard(
        kind="segmentation",
        architecture=Architecture("resunet3d", config.in_channels, config.labels.outputs, tuple(net.features),
                                  net.res_units, net.norm),
        preset=config.preset,
        normalisation=config.normalisation,
        modalities=tuple(config.modalities),
        patch_size=tuple(config.patch_size),
        labels=config.labels,
        inference=config.inference,
        prompts=config.prompts if isinstance(config, PromptableConfig) else None,
        provenance={
            "init": {"path": init, "kind": init_meta.kind if init_meta else "scratch",
                     "weights_sha256": init_meta.weights.sha256 if init_meta else None},
            "data": {"train": [{"images": list(c.images), "label": c.label} for c in train],
                     "validation": [{"images": list(c.images), "label": c.label} for c in val]},
            "steps": step,
            "best": best,
            "config": to_dict(config),
            "sar_version": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "python": platform.python_version(), "started": started,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def split(cases: Sequence[Case], val_fraction: float, min_train: int,
          max_cases: int | None) -> tuple[list[Case], list[Case]]:
    """Validation cases are the last ones: ``val_fraction`` of them, at least one, but only as many as
    leave ``min_train`` cases (or ``max_cases``, if fewer) to train on; training takes the first
    ``max_cases`` of the rest. Two cases thus train on both rather than on one."""
    if max_cases is not None and max_cases < 1:
        raise BadInput("--max-cases", f"must be at least 1 (got {max_cases})")
    n_val = max(1, round(val_fraction * len(cases))) if val_fraction > 0 else 0
    n_val = max(0, min(n_val, len(cases) - min(min_train, max_cases or min_train)))
    train, val = list(cases[: len(cases) - n_val]), list(cases[len(cases) - n_val:])
    return (train[:max_cases] if max_cases is not None else train), val


def describe_split(train: Sequence[Case], val: Sequence[Case], config: FinetuneConfig) -> str:
    """The split in one line, cases named by their label files (relative to the folder they share)."""
    labels = [Path(c.label).resolve() for c in [*train, *val]]
    root = Path(os.path.commonpath([p.parent for p in labels]))
    names = [str(p.relative_to(root)) for p in labels]

    def listing(part: list[str], limit: int = 8) -> str:
        return ", ".join(part[:limit]) + (f", ... ({len(part) - limit} more)" if len(part) > limit else "")

    text = f"fine-tuning on {len(train)} case(s): {listing(names[:len(train)])}; "
    if val:
        return text + (f"validating on {len(val)}: {listing(names[len(train):])} every {config.val_every} steps "
                       "(crops around their labels)")
    why = ("val_fraction is 0" if config.val_fraction == 0 else
           f"holding cases out would leave fewer than min_train_cases={config.min_train_cases} to train on")
    return text + f"no validation ({why}); the model folder keeps the latest weights"


def validation_crop(item: dict, margin_zyx: Sequence[int]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """A case's image, label map and body mask cut to its labels' bounding box widened by ``margin_zyx`` voxels a
    side (the whole case when it has no label): a fraction of the volume, so validation stays cheap
    next to training. The Dice misses only false positives farther than the margin from the tumor."""
    start, end = generate_spatial_bounding_box(item["fg"], margin=list(margin_zyx), allow_smaller=True)
    labeled = any(b > a for a, b in zip(start, end))
    box = tuple(slice(a, b) for a, b in zip(start, end)) if labeled else (slice(None),) * 3
    return item["image"][(slice(None), *box)].contiguous(), item["label"][box], item["where"][0].numpy()[box] > 0


def segmentation_loss(config: FinetuneConfig) -> torch.nn.Module:
    """Dice + cross-entropy for the label scheme: softmax CE over classes, or one binary CE per region.

    MONAI's DiceCELoss cannot serve regions: with more than one output channel it applies softmax
    cross-entropy even when ``sigmoid=True``, so overlapping regions compete and background voxels (an
    all-zero target) contribute no cross-entropy at all.
    """
    dice, ce = (0.0 if config.loss == "ce" else 1.0), (0.0 if config.loss == "dice" else 1.0)
    if config.labels.mode == "classes":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice, lambda_ce=ce)
    return RegionLoss(dice, ce)


class RegionLoss(torch.nn.Module):
    """Sigmoid Dice plus binary cross-entropy per region channel (overlapping regions, e.g. BraTS)."""

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> None:
        super().__init__()
        self.dice, self.bce = DiceLoss(sigmoid=True), torch.nn.BCEWithLogitsLoss()
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * self.bce(logits, target)


def intensity_augmentation(jitter: float) -> list[Transform]:
    """Each channel of a patch scaled by a factor in 1 +- ``jitter`` and shifted by +- ``jitter`` times its
    standard deviation, each with probability 0.5 (both independent of how the channels were normalised):
    one labeled case then stands for scanners whose contrasts differ (nnU-Net's brightness augmentation)."""
    if jitter <= 0:
        return []
    return [RandScaleIntensityd("image", jitter, prob=0.5, channel_wise=True),
            RandStdShiftIntensityd("image", jitter, prob=0.5, channel_wise=True)]


def spatial_augmentation(probability: float) -> list[Transform]:
    """With ``probability``, a patch rotated up to 30 degrees about each axis and zoomed 0.7-1.3 (about nnU-Net's
    ranges), the target by nearest neighbour: one labeled tumor then stands for others of other shapes."""
    if probability <= 0:
        return []
    return [RandAffined(["image", "target"], prob=probability, rotate_range=(np.pi / 6,) * 3, scale_range=(0.3,) * 3,
                        mode=("bilinear", "nearest"), padding_mode="zeros")]


RANK_SEED_STRIDE = 1_000_003  # a rank's patch stream starts this far from the next rank's (more than any run's epochs)


def patches(dataset: CacheDataset, config: FinetuneConfig, seed: int, rank: int = 0) -> Iterator[dict]:
    """Endless shuffled stream of batches of at least ``batch_size`` patches: each epoch passes over the
    cases as often as one batch needs them, so a batch is full even when there are fewer cases than it takes.
    Each distributed ``rank`` draws its own crops, also when ranks share cases."""
    per_batch = -(-config.batch_size // config.samples_per_case)
    epoch = 0
    while True:
        # MONAI's DataLoader seeds the random transforms from its generator: without one, every epoch after
        # the first repeated the first's patches
        generator = torch.Generator().manual_seed(seed + epoch + RANK_SEED_STRIDE * rank)
        sampler = RandomSampler(dataset, num_samples=per_batch * len(dataset), generator=generator)
        yield from DataLoader(dataset, batch_size=per_batch, sampler=sampler, num_workers=config.workers,
                              generator=generator)
        epoch += 1


def finetune(
    config: FinetuneConfig,
    cases: Sequence[Case],
    init: str,
    out: Path,
    device: torch.device,
    dist_info: Distributed = Distributed(),
    resume: bool = False,
    progress_mode: str = "bar",
    steps: int | None = None,
    max_cases: int | None = None,
    allow_partial_init: bool = False,
    job: type[Finetuning] | None = None,
) -> Path:
    """Fine-tune (or resume) into the model folder ``out``; the folder holds the best model by validation Dice.
    A new run refuses an initial model whose encoder does not fit wholly unless ``allow_partial_init``.
    ``job``: the trainer (default :class:`Finetuning`; ``sarseg.interactive`` trains promptable models)."""
    out = Path(out)
    state = resume_state(out, resume)
    if state is not None:
        promptable = "prompts" in state["config"]
        if promptable != isinstance(config, PromptableConfig):
            raise BadInput(out / CHECKPOINT, f"holds a {'promptable' if promptable else 'fixed'} model's training: resume it "
                                             f"{'with' if promptable else 'without'} --promptable")
        config = from_dict(state["config"], str(out / CHECKPOINT), type(config))
        init = state["init"]
        saved = json.loads(state["cases"])  # the first run's split, reused as it was
        train_cases, val_cases = ([Case(tuple(c["images"]), c["label"]) for c in saved[k]] for k in ("train", "validation"))
    if steps is not None:
        config.steps = steps
    if not cases and state is None:
        raise BadInput("--images", "no labeled cases given")
    config, init_meta, init_state = load_init(init, config)
    if not config.modalities:
        config.modalities = ("default",) * len((cases or train_cases)[0].images)
    if init_state is not None and state is None:
        check_init(config, init, init_meta, init_state, allow_partial_init, dist_info.main)
    train, val = ((train_cases, val_cases) if state is not None
                  else split(cases, config.val_fraction, config.min_train_cases, max_cases))
    loader = LoadCase(config)
    loaded = {c: loader({"images": c.images, "label": c.label}) for c in [*train, *val]}  # all checked first
    trainer = (job or Finetuning)(config, train, val, loaded, init, init_meta, init_state, out, device, dist_info, progress_mode)
    return trainer.fit(state)


class Finetuning(Trainer):
    """What fine-tuning adds to the run: weights transferred from the initial model, patch batches from
    cached cases, Dice + cross-entropy, and validation every ``val_every`` steps that keeps the best
    model in the folder (without validation cases, the latest at each checkpoint)."""

    def __init__(self, config: FinetuneConfig, train: list[Case], val: list[Case], loaded: dict[Case, dict], init: str,
                 init_meta: dict | None, init_state: dict | None, out: Path, device: torch.device,
                 dist_info: Distributed, progress_mode: str) -> None:
        super().__init__(config, out, device, dist_info, progress_mode)
        self.train_cases, self.val_cases, self.loaded = train, val, loaded
        self.init, self.init_meta, self.init_state = init, init_meta, init_state
        self.transfer: dict[str, list[str]] | None = None
        self.best = {"dice": -1.0, "step": 0}

    def build(self) -> UNet3D:
        config = self.config
        net = UNet3D(len(config.modalities), config.labels.outputs, config.net)
        if self.init_state:
            self.transfer = transfer_weights(net, self.init_state, init_prefix(self.init_meta))
        return net

    def setup(self, state: dict | None) -> None:
        config, dist_info = self.config, self.dist
        if state is not None:
            self.best = json.loads(state["best"])
            if (self.out / "model.json").is_file():  # the folder may hold a better model saved after the checkpoint
                saved_best = read_card(self.out).provenance.get("best", {})
                self.best = saved_best if saved_best.get("dice", -1.0) > self.best["dice"] else self.best
        patch = config.patch_zyx
        keys = ["image", "target", "where"]
        ratios = [config.outside_fraction, max(0.0, 1 - config.pos_fraction - config.outside_fraction), config.pos_fraction]
        transforms = Compose([
            SpatialPadd(keys, spatial_size=patch),
            RandCropByLabelClassesd(["image", "target"], "where", patch, ratios, num_classes=3,
                                    num_samples=config.samples_per_case, warn=False),
            *[RandFlipd(["image", "target"], prob=0.5, spatial_axis=a) for a in range(3)],
            *spatial_augmentation(config.affine_prob),
            *intensity_augmentation(config.intensity_jitter),
            DeleteItemsd(["fg", "where", "label", "spacing", "name"]),
        ])
        shard = self.train_cases[dist_info.rank::dist_info.world] or self.train_cases
        dataset = CacheDataset([self.loaded[c] for c in shard], transforms, cache_rate=1.0, num_workers=0, progress=False)
        self.stream = patches(dataset, config, config.seed + self.start, dist_info.rank)
        self.loss_fn = segmentation_loss(config)
        self.crops = {c: validation_crop(self.loaded[c], patch) for c in self.val_cases} if dist_info.main else {}
        self.progress.note(f"sarseg: {describe_split(self.train_cases, self.val_cases, config)}")

    def start_fields(self) -> dict:
        train, val = self.train_cases, self.val_cases
        return {"init": self.init, "train_cases": len(train), "validation_cases": len(val),
                "transfer": {k: len(v) for k, v in (self.transfer or {}).items()},
                "split": {"train": [c.label for c in train], "validation": [c.label for c in val]}}

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, size = next(self.stream), self.config.batch_size
        return batch["image"].as_tensor()[:size].to(self.device), batch["target"].as_tensor()[:size].to(self.device)

    def forward(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        return model(batch[0])

    def loss(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.loss_fn(outputs.float(), batch[1])
        return loss, {"loss": loss.item()}

    def validation_due(self, step: int) -> bool:
        """Whether ``step`` validates: every ``val_every`` steps and at the last, when cases are held out."""
        return bool(self.val_cases) and (step % self.config.val_every == 0 or step == self.config.steps)

    def validate(self, step: int) -> None:
        config = self.config
        if not self.validation_due(step):
            return
        scores = []
        for case in self.val_cases:
            image, label, body = self.crops[case]
            probs = predict(self.net, image, config.patch_zyx, config.labels, config.inference, self.device, body=body)
            spacing = self.loaded[case]["spacing"]
            scores.append(evaluate_maps(config.labels.to_label_map(probs), label, spacing, config.labels))
        per_label = {name: float(np.mean([s[i]["dice"] for s in scores])) for i, name in enumerate(config.labels.names)}
        mean = float(np.mean(list(per_label.values())))
        if mean > self.best["dice"]:
            self.best.update(dice=mean, step=step, per_label=per_label)
            self.write_model(step)
        self.net.train()
        self.progress.event("validation", step=step, dice=mean, per_label=per_label, best_dice=self.best["dice"],
                            best_step=self.best["step"])

    def checkpoint_state(self) -> dict:
        return {"init": self.init, "best": json.dumps(self.best),
                "cases": json.dumps({k: [{"images": list(c.images), "label": c.label} for c in v]
                                     for k, v in (("train", self.train_cases), ("validation", self.val_cases))})}

    def save(self, step: int) -> None:
        if not self.val_cases:
            self.write_model(step)

    def write_model(self, step: int) -> None:
        meta = model_meta(self.config, self.init, self.init_meta, self.train_cases, self.val_cases, step, self.best,
                          self.started)
        with writing(self.out):
            save_model(self.out, self.net.state_dict(), meta)

    def done_fields(self) -> dict:
        return {"best_dice": self.best["dice"] if self.val_cases else None}
