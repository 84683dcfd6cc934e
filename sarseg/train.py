"""What every training job shares: devices, DDP under ``torchrun``, stop signals, atomic checkpoints
(loaded with ``weights_only=True``), and progress as JSON lines, a bar, and a CSV log.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, TextIO

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .config import to_dict
from .core.errors import BadInput, Cancelled
from .core.files import NotWritten, check_writable, remove_stale_temporaries, write_bytes, writing
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
        # generous timeout: other ranks wait while rank 0 validates or writes checkpoints
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
    """A new run needs an empty or new folder, a resumed one its checkpoint; both a writable folder."""
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise BadInput(out / CHECKPOINT, "--resume given but there is no checkpoint to resume from")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(out, "exists and is not empty; choose a new --out or add --resume")
    check_writable(out, "--out")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a kill mid-write keeps the previous checkpoint intact."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInput(path, "no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInput(path, f"unreadable checkpoint ({exc})") from None


class Progress:
    """Reports steps as JSON lines on stdout (``json``), a bar on stderr (``bar``: redrawn in place on a
    terminal, one whole line per report otherwise, so logs and pipes stay readable) or not at all
    (``none``), and appends each report to ``log.csv`` in the job folder."""

    def __init__(self, mode: str, folder: Path, total: int, start: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.mode, self.total, self.enabled = mode, total, enabled
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.csv_path = folder / "log.csv"
        self._t0, self._s0 = time.monotonic(), start
        self._window_t, self._window_s = self._t0, start

    def event(self, name: str, **fields: Any) -> None:
        if self.enabled and self.mode == "json":
            print(format_event(name, **fields), file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line for the person watching (stderr in every mode but ``none``)."""
        if self.enabled and self.mode != "none":
            print(text, file=sys.stderr, flush=True)

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
            print(format_event("step", **row), file=self.stream, flush=True)
        elif self.mode == "bar":
            done = int(30 * step / self.total)
            text = (f"[{'#' * done}{'.' * (30 - done)}] {step}/{self.total} loss {metrics.get('loss', math.nan):.4f} "
                    f"{rate:.1f} cubes/s ETA {row['eta_s']:.0f}s")
            if self.stream.isatty():
                print(f"\r{text}", end="" if step < self.total else "\n", file=self.stream, flush=True)
            else:
                print(text, file=self.stream, flush=True)

    def _write_csv(self, row: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with writing(self.csv_path), open(self.csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def make_optimizer(params: Iterable[torch.nn.Parameter], config: Any) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def resume_state(out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from (``--resume``), after checking the output folder either way."""
    check_output(out, resume)
    return load_checkpoint(out / CHECKPOINT) if resume else None


class Trainer:
    """One training run, whatever the job (nnU-Net's design: a base class whose hooks a job overrides).

    The run owns seeding, the optimizer, resume, DDP wrapping, bfloat16 autocast on CUDA, the loop with
    its stop signals, checkpoints and the start/step/checkpoint/done events; a job supplies its network
    (:meth:`build`), data (:meth:`setup`, :meth:`batch`), forward pass and loss, validation, and what
    its checkpoint and model folder hold.
    """

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    progress: Progress

    def __init__(self, config: Any, out: Path, device: torch.device, dist_info: Distributed, progress_mode: str) -> None:
        self.config, self.out, self.device, self.dist = config, Path(out), device, dist_info
        self.progress_mode = progress_mode
        self.start, self.started = 0, datetime.now(timezone.utc).isoformat(timespec="seconds")

    # ---- what a job supplies

    def build(self) -> torch.nn.Module:
        """The network with its initial weights (on the CPU; seeded)."""
        raise NotImplementedError

    def setup(self, state: dict[str, Any] | None) -> None:
        """Data and whatever else the steps need; ``self.start`` and the weights are already resumed."""

    def batch(self, step: int) -> Any:
        raise NotImplementedError

    def forward(self, model: torch.nn.Module, batch: Any, step: int) -> Any:
        """The network's outputs (under autocast); ``model`` is the DDP wrapper when distributed."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise and the metrics to report (``loss`` among them)."""
        raise NotImplementedError

    def validate(self, step: int) -> None:
        """After every step, on the main process only; a job validates when its schedule says so."""

    def checkpoint_state(self) -> dict[str, Any]:
        """What the job adds to the checkpoint (tensors, numbers and strings only: ``weights_only``)."""
        return {}

    def save(self, step: int) -> None:
        """At every checkpoint, on the main process: update the model folder if the job keeps it current."""

    def start_fields(self) -> dict[str, Any]:
        return {}

    def done_fields(self) -> dict[str, Any]:
        return {}

    # ---- the run

    def fit(self, state: dict[str, Any] | None) -> Path:
        """Train into ``out`` (resuming ``state`` when given). A run that fails before its first checkpoint
        leaves the folder as it found it (new: removed; empty: emptied). Raises Cancelled on SIGINT/SIGTERM
        after checkpointing."""
        created = not self.out.exists()
        try:
            with writing(self.out):
                self.out.mkdir(parents=True, exist_ok=True)
            if self.dist.main:
                remove_stale_temporaries(self.out)
            self._run(state)
        except Exception as exc:
            kept = (self.out / CHECKPOINT).is_file()
            if self.dist.main and not kept:  # the folder was new or empty: leave it so, a rerun may start
                if created:
                    shutil.rmtree(self.out, ignore_errors=True)
                else:
                    for entry in self.out.iterdir():
                        if entry.is_dir():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()
            if isinstance(exc, NotWritten):
                raise NotWritten(exc.what, f"{exc.problem}; " + (
                    "the last checkpoint is intact: make room, then add --resume" if kept
                    else "nothing of this run was kept")) from None
            raise
        return self.out

    def _run(self, state: dict[str, Any] | None) -> None:
        torch.manual_seed(self.config.seed + self.dist.rank)
        self.net = self.build().to(self.device)
        self.optimizer = make_optimizer(self.net.parameters(), self.config)
        if state is not None:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start, self.started = int(state["step"]), state["started"]
        self.progress = Progress(self.progress_mode, self.out, self.config.steps, self.start, enabled=self.dist.main)
        self.setup(state)
        model = DistributedDataParallel(self.net) if self.dist.world > 1 else self.net
        self.progress.event("start", step=self.start, steps=self.config.steps, device=str(self.device),
                            world=self.dist.world, **self.start_fields())
        step = self._loop(model)
        self.progress.event("done", step=step, path=str(self.out), **self.done_fields())

    def _loop(self, model: torch.nn.Module) -> int:
        """Steps from ``start`` to ``config.steps``: metrics averaged and reported every ``log_every``
        steps, validation, then a checkpoint every ``checkpoint_every`` steps and at the end. On
        SIGINT/SIGTERM: checkpoint, then raise Cancelled (exit 130)."""
        config, step = self.config, self.start
        window: dict[str, list[float]] = {}
        amp = config.amp and self.device.type == "cuda"
        with StopRequest() as stop:
            while step < config.steps:
                if stop.requested():
                    self._checkpoint(step)
                    raise Cancelled(f"stopped at step {step}; resume with --resume")
                batch = self.batch(step)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs = self.forward(model, batch, step)
                loss, metrics = self.loss(outputs, batch, step)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                step += 1
                for key, value in metrics.items():
                    window.setdefault(key, []).append(value)
                if step % config.log_every == 0 or step == config.steps:
                    self.progress.step(step, {k: sum(v) / len(v) for k, v in window.items()},
                                       config.batch_size * self.dist.world)
                    window.clear()
                if self.dist.main:
                    self.validate(step)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    self._checkpoint(step)
        return step

    def _checkpoint(self, step: int) -> None:
        if not self.dist.main:
            return
        with writing(self.out):
            save_checkpoint(self.out / CHECKPOINT, {
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step,
                "config": to_dict(self.config), "started": self.started, **self.checkpoint_state()})
            self.save(step)
        self.progress.event("checkpoint", step=step, path=str(self.out))
