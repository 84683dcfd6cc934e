"""What every training job shares: devices, DDP under ``torchrun``, stop signals, atomic checkpoints
(loaded with ``weights_only=True``), and progress as JSON lines, a bar, and a CSV log.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import torch
import torch.distributed as dist

from .core.errors import BadInput, Cancelled
from .core.files import atomic_path
from .core.progress import format_event

CHECKPOINT = "checkpoint.pt"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is bad input."""
    if name not in ("auto", "cpu", "cuda"):
        raise BadInput("--device", f"unknown device {name!r}; choose auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device", "cuda was asked for but no CUDA GPU is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (world 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group ``torchrun`` describes in the environment: NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # generous timeout: other ranks wait while rank 0 validates on whole volumes or writes checkpoints
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Distributed(int(os.environ.get("RANK", "0")), world, local_rank), device


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (then checkpoint, exit 130)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *_exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        """True on every rank once any rank was signalled (so all stop at the same step)."""
        flag = torch.tensor([1.0 if self.signal is not None else 0.0])
        if dist.is_initialized() and dist.get_backend() == "gloo":
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        elif dist.is_initialized():
            flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


def check_output(out: Path, resume: bool) -> None:
    """A new run needs an empty or new folder; a resumed one needs its checkpoint."""
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise BadInput(out / CHECKPOINT, "--resume given but there is no checkpoint to resume from")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(out, "exists and is not empty; choose a new --out or add --resume")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a kill mid-write keeps the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(path, "no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInput(path, f"unreadable checkpoint ({exc})") from None


class Progress:
    """Reports steps as JSON lines on stdout (``json``), a one-line bar on stderr (``bar``) or not at
    all (``none``), and appends each report to ``log.csv`` in the job folder."""

    def __init__(self, mode: str, folder: Path, total: int, start: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.mode, self.total, self.enabled = mode, total, enabled
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.csv_path = folder / "log.csv"
        self._t0, self._s0 = time.monotonic(), start
        self._window_t, self._window_s = self._t0, start

    def event(self, name: str, **fields: Any) -> None:
        if self.enabled and self.mode == "json":
            print(format_event(name, **fields), file=self.stream, flush=True)

    def step(self, step: int, metrics: dict[str, float], items_per_step: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        rate = (step - self._window_s) * items_per_step / max(now - self._window_t, 1e-9)
        per_step = (now - self._t0) / max(step - self._s0, 1)
        row = {"step": step, "steps": self.total, **{k: round(v, 6) for k, v in metrics.items()},
               "cubes_per_s": round(rate, 2), "eta_s": round(per_step * (self.total - step), 1),
               "elapsed_s": round(now - self._t0, 1)}
        self._window_t, self._window_s = now, step
        self._write_csv(row)
        if self.mode == "json":
            print(json.dumps({"event": "step", **row}), file=self.stream, flush=True)
        elif self.mode == "bar":
            done = int(30 * step / self.total)
            loss = f"loss {metrics.get('loss', math.nan):.4f}"
            print(f"\r[{'#' * done}{'.' * (30 - done)}] {step}/{self.total} {loss} {rate:.1f} cubes/s "
                  f"ETA {row['eta_s']:.0f}s", end="" if step < self.total else "\n", file=self.stream, flush=True)

    def _write_csv(self, row: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def make_optimizer(params: Iterable[torch.nn.Parameter], config: Any) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def train_loop(
    step_fn: Callable[[int], dict[str, float]],
    start: int,
    config: Any,
    progress: Progress,
    checkpoint: Callable[[int], None],
    items_per_step: int,
    after_step: Callable[[int], None] | None = None,
) -> int:
    """Run ``step_fn`` from ``start`` to ``config.steps``: metrics averaged and reported every
    ``log_every`` steps, ``after_step`` (validation) then ``checkpoint`` every ``checkpoint_every``
    steps and at the end. On SIGINT/SIGTERM: checkpoint, then raise Cancelled (exit 130)."""
    window: dict[str, list[float]] = {}
    step = start
    with StopRequest() as stop:
        while step < config.steps:
            if stop.requested():
                checkpoint(step)
                raise Cancelled(f"stopped at step {step}; resume with --resume")
            metrics = step_fn(step)
            step += 1
            for key, value in metrics.items():
                window.setdefault(key, []).append(value)
            if step % config.log_every == 0 or step == config.steps:
                progress.step(step, {k: sum(v) / len(v) for k, v in window.items()}, items_per_step)
                window.clear()
            if after_step is not None:
                after_step(step)
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint(step)
    return step
