"""``sarseg demo``: the whole loop on built-in synthetic data, with nothing else needed: generate
multi-modal phantoms, pretrain with SAR, fine-tune on a few labeled cases, segment an unseen case, and
write the label map, a picture and the metrics."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import phantom
from .config import finetune_config, pretrain_config
from .core.labels import SCHEMES
from .data import Source
from .figures import overlay_png
from .finetune import Case, finetune
from .infer import Segmenter
from .io import read_image, read_label, write_segmentation
from .metrics import evaluate_maps
from .pretrain import pretrain


def run_demo(out: Path, device: torch.device, pretrain_steps: int = 150, finetune_steps: int = 400, seed: int = 0,
             progress: str = "bar") -> dict:
    """Returns the paths it wrote and the metrics on the unseen case. Each stage is announced on stderr,
    so the two progress bars are told apart."""
    out = Path(out)
    started = time.monotonic()
    cases = phantom.write_cases(out / "data", 8)
    unlabeled, labeled, unseen = cases[:6], cases[:5], cases[7]
    sources = [Source(m, tuple(c[m] for c in unlabeled)) for m in phantom.MODALITIES]
    pre_cfg = pretrain_config("tiny", {"steps": pretrain_steps, "checkpoint_every": pretrain_steps, "seed": seed})
    _say(f"pretraining (SAR, {pretrain_steps} steps) on {len(unlabeled)} unlabeled CT/MR/PET cases")
    pretrain(pre_cfg, sources, out / "pretrained", device, progress_mode=progress)
    ft_cfg = finetune_config("tiny", {"steps": finetune_steps, "seed": seed, "modalities": ["mr"], "val_every": 100,
                                      "labels": SCHEMES["binary"].to_dict(), "checkpoint_every": finetune_steps,
                                      "inference": {"min_size_mm3": 200.0}})
    _say(f"fine-tuning ({finetune_steps} steps) on {len(labeled)} labeled MR cases")
    finetune(ft_cfg, [Case((c["mr"],), c["label"]) for c in labeled], str(out / "pretrained"), out / "segmenter", device,
             progress_mode=progress)
    _say("segmenting the unseen case")
    segmenter = Segmenter.load(out / "segmenter", device)
    image = read_image([unseen["mr"]], ("mr",))
    label, _ = segmenter(image)
    seg = write_segmentation(out / "unseen_segmentation.seg.nrrd", label, image.geometry, segmenter.labels.segments())
    reference = read_label(unseen["label"], image.geometry)
    metrics = evaluate_maps(label, reference, image.geometry.spacing[::-1], segmenter.labels)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    legend = {entry["value"]: (entry["name"], entry["color"]) for entry in segmenter.labels.segments()}
    png = overlay_png(out / "unseen_overlay.png", image.array[0], label, image.geometry.spacing[::-1], legend, reference)
    return {"pretrained_model": str(out / "pretrained"), "segmentation_model": str(out / "segmenter"),
            "segmentation": str(seg), "overlay_png": str(png), "metrics": str(out / "metrics.json"),
            "dice": {m["name"]: round(m["dice"], 3) for m in metrics}, "seconds": round(time.monotonic() - started, 1),
            "reference_voxels": int(np.count_nonzero(reference))}


def _say(stage: str) -> None:
    print(f"sarseg demo: {stage}", file=sys.stderr, flush=True)
