"""Annotate and fine-tune (:class:`TrainingSetLogic`): training cases from the scene, and new model versions.

Each model has its own training set, ``<models root>/<model>/training``, in the nnU-Net v2 layout
(``imagesTr/CASE_0000.nii.gz``..., ``labelsTr/CASE.nii.gz``) with a ``dataset.json`` kept up to date
(``channel_names``, ``labels``, ``numTraining``, ``file_ending``; plus ``sar_label_scheme``, the
engine's label scheme, so the segments keep their names, values and colors). "Fine-tune" submits
``sarseg finetune --init MODEL --dataset .../dataset.json --out <models root>/<name>-v<N+1>`` as a
background job: the new version appears in the SAR Segmentation module's model list, and no model is
ever overwritten. Only the standard library is imported at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from SARSegmentationLib.models import ModelInfo, core_call, cuda_available, resolve_device, safe_name
from SARSegmentationLib.protocols import JobRunner, ModelStore, SARLogicError, SceneAdapter

DATASET_JSON = "dataset.json"
FILE_ENDING = ".nii.gz"
PRESETS = ("tiny", "small", "genesis")


def _atomic_write_json(path: Path, data: Any) -> None:
    from sarseg.core.files import write_bytes

    write_bytes(path, json.dumps(data, indent=2).encode("utf-8"))


def scheme_from_segments(segments: Sequence[tuple[str, Sequence[float]]]) -> dict:
    """One class per segment, valued 1, 2, ... in the segments' order (their names and colors kept)."""
    from sarseg.core.labels import LabelScheme

    if not segments:
        raise SARLogicError("the segmentation has no segments; paint the tumor first")
    names = [name for name, _ in segments]
    colors = [[round(float(c), 4) for c in color] for _, color in segments]
    return core_call(LabelScheme.classes, names, range(1, len(names) + 1), colors, "the segments").to_dict()


def scheme_for(model: ModelInfo, segments: Sequence[tuple[str, Sequence[float]]] = ()) -> dict:
    """The label scheme of a training set: a segmentation model's own (names, values and colors stay as
    they are); for a pretrained model, one class per segment of the first annotated case."""
    return model.label_scheme if model.kind == "segmentation" else scheme_from_segments(segments)


def name_to_value(scheme: dict) -> dict[str, int]:
    """Segment name -> the label value written for it (the scheme's paint value)."""
    from sarseg.core.labels import LabelScheme

    return core_call(LabelScheme.from_dict, scheme, "sar_label_scheme").value_of()


class TrainingSetLogic:
    """Training sets per model and fine-tuning jobs; no Qt, no ``slicer.app``."""

    def __init__(self, runner: JobRunner, models: ModelStore, scene: SceneAdapter,
                 cuda: Callable[[], bool] = cuda_available) -> None:
        self.runner, self.models, self.scene, self.cuda = runner, models, scene, cuda

    # reading a training set
    def folder(self, model_name: str) -> Path:
        return self.models.training_folder(model_name)

    def dataset(self, model_name: str) -> Any:
        """The training set's ``sarseg.core.datasets.Dataset`` (None before its first case)."""
        from sarseg.core import datasets
        from sarseg.core.errors import BadInput

        path = self.folder(model_name) / DATASET_JSON
        if not path.is_file():
            return None
        try:
            return datasets.read(path)
        except BadInput as exc:
            raise SARLogicError(str(exc)) from None

    def cases(self, model_name: str) -> list[str]:
        labels = self.folder(model_name) / "labelsTr"
        if not labels.is_dir():
            return []
        return sorted(p.name[: -len(FILE_ENDING)] for p in labels.iterdir() if p.name.endswith(FILE_ENDING))

    def channel_names(self, model_name: str, channels_text: str = "") -> list[str]:
        """The input channels of a case: a segmentation model's modalities; for a pretrained model those
        typed by the user (``"flair, t1c"``), else the training set's, else one ``default`` channel."""
        model = self.models.get(model_name)
        if model.kind == "segmentation":
            return list(model.modalities)
        typed = [c.strip().lower() for c in str(channels_text or "").split(",") if c.strip()]
        if typed:
            for name in typed:
                if safe_name(name, "") != name:
                    raise SARLogicError(f"channel name {name!r}: use letters, digits, '_', '-' or '.'")
            return typed
        dataset = self.dataset(model_name)
        return list(dataset.channels) if dataset else ["default"]

    def next_case_id(self, model_name: str, hint: str = "case") -> str:
        base = safe_name(hint, "case")
        taken = set(self.cases(model_name))
        images = self.folder(model_name) / "imagesTr"
        if images.is_dir():
            taken.update(p.name.rsplit("_", 1)[0] for p in images.iterdir())
        if base not in taken:
            return base
        number = 2
        while f"{base}_{number}" in taken:
            number += 1
        return f"{base}_{number}"

    # adding a case
    def add_case(self, model_name: str, volumes: Sequence[Any], segmentation_node: Any, case_id: str = "",
                 channels_text: str = "", overwrite: bool = False) -> dict:
        """Write the annotated case (volumes on their exact grid, the segments as a label map) into the
        model's training set and update ``dataset.json``; ``overwrite``: replace a case of that id (else
        refused). Returns the case's entry."""
        model = self.models.get(model_name)
        names = self.channel_names(model_name, channels_text)
        volumes = list(volumes)
        if len(volumes) != len(names) or any(v is None for v in volumes):
            raise SARLogicError(f"a case of model {model.name!r} has {len(names)} channel(s) ({', '.join(names)}); "
                                "select one volume for each")
        existing = self.dataset(model_name)
        if existing and list(existing.channels) != names:
            raise SARLogicError(f"the training set of {model.name!r} has channels {', '.join(existing.channels)}, "
                                f"not {', '.join(names)}")
        scheme = (existing and existing.label_scheme) or scheme_for(model, self.scene.segments(segmentation_node))
        case_id = case_id.strip() if case_id and case_id.strip() else self.next_case_id(
            model_name, self.scene.node_name(volumes[0]) or "case")
        entry = self.scene.write_training_case(volumes, segmentation_node, name_to_value(scheme),
                                               self.folder(model_name), case_id, names, overwrite=overwrite)
        self.write_dataset_json(model, names, scheme)
        return entry

    def write_dataset_json(self, model: ModelInfo, channels: Sequence[str], scheme: dict) -> Path:
        """The training set's dataset.json (nnU-Net v2, through the engine's one writer) listing its cases."""
        from sarseg.core import datasets

        folder = self.folder(model.name)
        cases = tuple(datasets.nnunet_case(folder, case, len(channels), ending=FILE_ENDING)
                      for case in self.cases(model.name))
        dataset = datasets.Dataset(datasets.NNUNET, tuple(channels), cases, {"background": 0, **name_to_value(scheme)},
                                   scheme, name=model.name, file_ending=FILE_ENDING,
                                   description=f"Cases annotated in 3D Slicer for fine-tuning SAR model {model.name}")
        return datasets.write(folder / DATASET_JSON, dataset, extra={"sar_init_model": model.name})

    # fine-tuning
    def finetune_args(self, model: ModelInfo, dataset: Path, out: Path, config: Path, preset: str, device: str,
                      steps: int | None = None, batch_size: int | None = None) -> list[str]:
        args = ["finetune", "--init", str(model.path), "--dataset", str(dataset), "--out", str(out),
                "--config", str(config), "--preset", preset, "--device", device]
        if model.card.promptable:  # a promptable model's new version takes clicks too
            args.append("--promptable")
        if steps:
            args += ["--steps", str(int(steps))]
        if batch_size:
            args += ["--batch-size", str(int(batch_size))]
        return args

    def finetune(self, model_name: str, preset: str = "", steps: int | None = None, batch_size: int | None = None,
                 device: str = "auto") -> tuple[Any, Path]:
        """Submit fine-tuning of ``model_name`` on its training set into the next free version folder.
        Returns (job, new model folder)."""
        model = self.models.get(model_name)
        dataset = self.dataset(model_name)
        if not dataset or not dataset.labeled:
            raise SARLogicError(f"the training set of {model.name!r} is empty; add annotated cases first")
        if dataset.label_scheme is None:
            raise SARLogicError(f"{self.folder(model_name) / DATASET_JSON}: no 'sar_label_scheme' (the segments' "
                                "names, values and colors); add a case in this module to write it")
        preset = preset or model.preset
        if preset not in PRESETS:
            raise SARLogicError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
        for label, value in (("steps", steps), ("batch size", batch_size)):
            if value is not None and int(value) < 0:
                raise SARLogicError(f"{label} must be positive")
        device_arg, job_device = resolve_device(device, self.cuda)
        out = self.models.reserve(model.name, new_version=True)
        folder = self.folder(model_name)
        config = folder / f"finetune-{out.name}.json"
        _atomic_write_json(config, {"labels": dataset.label_scheme, "modalities": list(dataset.channels)})
        args = self.finetune_args(model, folder / DATASET_JSON, out, config, preset, device_arg, steps, batch_size)
        try:
            job = self.runner.submit("finetune", args, job_device)
        except Exception:
            try:
                out.rmdir()  # still empty: give the version name back
            except OSError:
                pass
            raise
        return job, out
