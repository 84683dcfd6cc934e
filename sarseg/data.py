"""Where pretraining volumes come from and how they reach the proxy task.

Sources are ``[NAME=]PATH`` specs (a file, a DICOM series folder, a folder of images, a glob, or a
dataset.json in the Medical Segmentation Decathlon / nnU-Net v2 layout, read by ``core/datasets.py``:
every channel of every case, a 4D Decathlon file giving one volume per channel); the name feeds the
modality discriminator and picks the normalisation. Volumes are read lazily by DataLoader workers (MONAI's
``Dataset``) into a bounded :class:`VolumePool`, so thousands of scans need a few scans' memory.
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from monai.data import Dataset
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from . import proxy
from .config import PretrainConfig, ProxyConfig
from .core import datasets
from .core.errors import BadInput
from .io import body_mask, normalisation_for, read_image

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Source:
    """Named group of volumes (e.g. ``ct``): files holding one 3D volume each, or where ``channels`` gives
    an index, that channel of a 4D file (a Decathlon dataset's modality)."""

    name: str
    paths: tuple[str, ...]
    channels: tuple[int | None, ...] = ()

    def volumes(self) -> list[tuple[str, int | None]]:
        """(path, channel) per volume; channel None: the whole file."""
        return list(zip(self.paths, self.channels or (None,) * len(self.paths)))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _looks_like_dicom_folder(path: Path) -> bool:
    return any(p.suffix.lower() in (".dcm", "") and p.is_file() for p in path.iterdir())


def parse_sources(specs: Sequence[str]) -> list[Source]:
    """Turn ``[NAME=]PATH`` specs into sources; the same name in several specs joins one source. A
    dataset.json gives every channel of every case, named by its channel unless NAME is given."""
    groups: dict[str, list[tuple[str, int | None]]] = {}
    for spec in specs:
        name, sep, target = spec.partition("=")
        if not sep or os.path.exists(spec):
            name, target = "", spec
        path = Path(target)
        found: list[tuple[str | None, str, int | None]]
        if any(ch in target for ch in "*?["):
            found = [(None, p, None) for p in sorted(glob.glob(target, recursive=True)) if _is_image(Path(p)) or Path(p).is_dir()]
        elif path.name.endswith(".json") and path.is_file():
            found = [(channel, ref.path, ref.channel) for channel, ref in datasets.read(path).volumes()]
        elif path.is_dir():
            images = sorted(str(p) for p in path.iterdir() if _is_image(p))
            found = [(None, p, None) for p in images or ([str(path)] if _looks_like_dicom_folder(path) else [])]
        elif path.exists():
            found = [(None, str(path), None)]
        else:
            raise BadInput(target, "no such file or folder")
        if not found:
            raise BadInput(target, "matches no image files")
        for channel, file, index in found:
            groups.setdefault((name or channel or "default").lower(), []).append((file, index))
    if not groups:
        raise BadInput("--data", "no data given")
    sources = []
    for name, volumes in groups.items():
        paths, channels = zip(*dict.fromkeys(volumes))
        sources.append(Source(name, paths, channels if any(c is not None for c in channels) else ()))
    return sources


def items(sources: Sequence[Source]) -> list[dict]:
    """One dict per volume for MONAI's ``Dataset``: path, channel (None: the whole file), source index and name."""
    return [{"path": p, "channel": c, "source": i, "name": s.name} for i, s in enumerate(sources) for p, c in s.volumes()]


class LoadVolume:
    """Read one volume and normalise it for its source; runs in DataLoader workers."""

    def __init__(self, normalisation: Mapping[str, Mapping]) -> None:
        self.normalisation = normalisation

    def __call__(self, item: dict) -> dict:
        image = read_image([item["path"]])
        channel = item.get("channel")
        if channel is None and image.channels != 1:
            raise BadInput(item["path"], f"holds {image.channels} channels along a 4th axis; pretraining reads one "
                           "3D volume per file (list it in a Decathlon dataset.json, or split the channels into files)")
        if channel is not None and channel >= image.channels:
            raise BadInput(item["path"], f"holds {image.channels} channel(s); its dataset.json names channel {channel} "
                           f"({item['name']})")
        raw = image.array[channel or 0]
        array = normalisation_for(item["name"], self.normalisation)(raw)
        spacing_zyx = torch.tensor(image.geometry.spacing[::-1], dtype=torch.float64)
        return {**item, "volume": torch.from_numpy(array)[None], "body": torch.from_numpy(body_mask(raw[None])), "spacing": spacing_zyx}


def check_volume(item: dict, config: PretrainConfig) -> dict:
    """Read a volume fully once before training starts, so bad input fails before anything is written."""
    loaded = LoadVolume(config.normalisation)(item)
    shape = torch.tensor(loaded["volume"].shape[1:])
    extents, fits = proxy.fitting_scales(config.proxy, loaded["spacing"], shape)
    if not bool(fits[0]):
        size = proxy.scale_extents_mm(config.proxy, shape * loaded["spacing"])[0].tolist()
        raise BadInput(
            item["path"],
            f"too small for the smallest cube: {_mm(size)} mm (z, y, x) does not fit in "
            f"{_mm((shape * loaded['spacing']).tolist())} mm",
        )
    return {"path": item["path"], "shape": tuple(shape.tolist()), "scales_fitting": int(fits.sum())}


def _mm(values: Sequence[float]) -> str:
    return "x".join(f"{v:.0f}" for v in values)


def check_volumes(entries: Sequence[dict], config: PretrainConfig, threads: int = 2) -> list[dict]:
    """Check every volume (readable, 3D, finite, not constant, positive spacing, big enough)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda item: check_volume(item, config), entries))


@dataclass
class PoolVolume:
    """A volume prepared for cube sampling on the training device."""

    source: int
    foreground: torch.Tensor
    views: list[proxy.ScaleView | None]


def prepare(loaded: dict, cfg: ProxyConfig, device: torch.device) -> PoolVolume:
    volume = loaded["volume"].to(device, non_blocking=True)
    shape = torch.tensor(volume.shape[1:])
    extents, fits = proxy.fitting_scales(cfg, loaded["spacing"], shape)
    foreground = proxy.foreground_coordinates(volume, cfg.foreground_threshold, body=loaded.get("body"))
    return PoolVolume(int(loaded["source"]), foreground, proxy.scale_views(volume, extents, fits, cfg.size_zyx))


def volume_stream(entries: Sequence[dict], config: PretrainConfig, seed: int, rank: int = 0, world: int = 1) -> Iterator[dict]:
    """Endless shuffled stream of loaded volumes, read by ``config.workers`` processes (this rank's share)."""
    dataset = Dataset(list(entries), transform=LoadVolume(config.normalisation))
    epoch = 0
    while True:
        if world > 1:
            sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed + epoch))
        loader = DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=config.workers)
        yield from loader
        epoch += 1


class VolumePool:
    """At most ``len(volumes)`` prepared volumes; ``refresh`` swaps the oldest for the next one from
    the stream (without a stream the pool is fixed, as in benchmarks)."""

    def __init__(self, volumes: list[PoolVolume], cfg: ProxyConfig, device: torch.device, stream: Iterator[dict] | None = None) -> None:
        self.volumes, self.cfg, self.device, self.stream = volumes, cfg, device, stream
        self._oldest = 0

    @classmethod
    def from_stream(cls, stream: Iterator[dict], size: int, cfg: ProxyConfig, device: torch.device) -> "VolumePool":
        return cls([prepare(next(stream), cfg, device) for _ in range(size)], cfg, device, stream)

    def refresh(self) -> None:
        if self.stream is not None:
            self.volumes[self._oldest] = prepare(next(self.stream), self.cfg, self.device)
            self._oldest = (self._oldest + 1) % len(self.volumes)

    def sample(self, batch_size: int, generator: torch.Generator) -> proxy.ProxyBatch:
        """A batch of corrupted cubes spread over the pool's volumes (one crop call per volume)."""
        owner = torch.randint(len(self.volumes), (batch_size,), generator=generator, device=self.device)
        counts = torch.bincount(owner, minlength=len(self.volumes)).tolist()
        cubes, scales, sources = [], [], []
        for volume, count in zip(self.volumes, counts):
            if count:
                c, s = proxy.sample_cubes(volume.views, volume.foreground, count, self.cfg.size_zyx, generator)
                cubes.append(c)
                scales.append(s)
                sources.append(torch.full((count,), volume.source, device=self.device))
        inputs, targets = proxy.corrupt(torch.cat(cubes), self.cfg, generator)
        return proxy.ProxyBatch(inputs, targets, torch.cat(scales), torch.cat(sources))
