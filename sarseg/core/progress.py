"""Progress lines: the one writer's format and the one reader of a job's ``progress.jsonl``.

A training or segmentation command run with ``--progress json`` prints one JSON object per line,
``{"event": NAME, ...}``, NAME one of :data:`EVENTS`. The job runner sends that stdout to the job's
``progress.jsonl``; anything else the command printed there (a library's warning) is not progress
and is only shown in the job's log. A resumed job appends to the same file: a new ``start`` line,
then steps from its checkpoint on.

Readers follow the file while it grows (:class:`ProgressReader`, over a :class:`Tail`): each call reads
only the bytes appended since the last one, a half-written last line waits for the next call, and a
replaced (shorter, or another) file is read again from its start. A job's log is followed the same way
(:class:`LogReader`): its ``log.txt`` and the stdout lines that are not progress. What the readers make
of the progress lines is the job's *summary* (latest step, steps, ETA, stage, losses, evaluation, validation,
done; ``Job.progress`` in :mod:`sarseg.core.jobs`) and, when asked for, the *loss history* for plots.

Standard library only.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

EVENTS = ("start", "step", "checkpoint", "evaluation", "validation", "done")


def format_event(name: str, **fields: Any) -> str:
    """One progress line (without its newline): ``{"event": name, **fields}`` as JSON."""
    if name not in EVENTS:
        raise ValueError(f"unknown progress event {name!r}; one of {', '.join(EVENTS)}")
    return json.dumps({"event": name, **fields})


def parse_line(raw: str) -> dict[str, Any] | None:
    """The event a line holds, or None when it holds none (blank, not JSON, no known ``event``)."""
    raw = raw.strip()
    if not raw.startswith("{"):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("event") in EVENTS else None


def number(value: Any) -> float | None:
    """``value`` when it is a finite number (not a bool), else None: summaries come from files."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def fraction(summary: dict[str, Any]) -> float | None:
    """Share of the steps done (0..1) by a summary, when it knows both step and steps."""
    step, steps = number(summary.get("step")), number(summary.get("steps"))
    return max(0.0, min(1.0, step / steps)) if step is not None and steps else None


def summarise(summary: dict[str, Any], event: dict[str, Any]) -> None:
    """Fold one event into a job's summary (in place): the latest event wins; a ``start`` begins a
    run (again, for a resumed job), so the ETA and ``done`` of an earlier run are dropped."""
    name = event["event"]
    fields = {k: v for k, v in event.items() if k != "event"}
    summary["event"] = name
    if name == "start":
        summary.update(step=event.get("step"), steps=event.get("steps"), started_step=event.get("step"))
        for key in ("eta_s", "done", "stage"):
            summary.pop(key, None)
        for key in ("device", "stage"):  # stage: what a run that names its stages (segment) begins with
            if key in event:
                summary[key] = event[key]
    elif name == "step":
        summary.update(fields)
        summary["losses"] = {k: v for k, v in fields.items() if k.startswith("loss")}
    elif name == "checkpoint":
        summary["checkpoint_step"] = event.get("step")
    elif name in ("evaluation", "validation"):
        summary[name] = fields
    else:  # done
        summary["done"] = True
        summary["step"] = event.get("step", summary.get("step"))


class Tail:
    """A growing file read on from where the last read stopped (a byte offset); a replaced (another, or
    shorter) file is read again from its start."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self.reset()

    def reset(self) -> None:
        self.offset = 0
        self.file: tuple[int, int] | None = None  # (device, inode) of the file read so far

    def read(self, partial: bool = False) -> tuple[bytes, bool]:
        """(the whole lines appended since the last call, and with ``partial`` an unfinished last line
        too; whether the file was replaced or removed since, so what was read before no longer holds)."""
        try:
            stat = os.stat(self.path)
        except OSError:  # not written yet, or removed
            restarted = self.file is not None
            self.reset()
            return b"", restarted
        restarted = False
        if (stat.st_dev, stat.st_ino) != self.file or stat.st_size < self.offset:
            restarted = self.file is not None
            self.offset, self.file = 0, (stat.st_dev, stat.st_ino)
        if stat.st_size == self.offset:
            return b"", restarted
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(stat.st_size - self.offset)
        end = len(chunk) if partial else chunk.rfind(b"\n") + 1
        self.offset += end
        return chunk[:end], restarted


STDOUT_MARK = "[stdout] "  # in a job's log, before a line its command printed on stdout that is not progress


class LogReader:
    """Follows a job's log: ``log`` (the command's stderr and the runner's notes), then the lines of
    ``stdout`` (its progress file) that are not progress, each marked :data:`STDOUT_MARK`. Each
    :meth:`read` returns only what was written since the previous one, so a view appends it."""

    def __init__(self, log: str | os.PathLike, stdout: str | os.PathLike) -> None:
        self._log, self._stdout = Tail(log), Tail(stdout)

    def read(self, final: bool = False) -> tuple[str, bool]:
        """(the new text, whether it is the whole log again because a file was replaced: what was shown
        before should go). Whole lines only, unless ``final`` (the job has ended: its last line too)."""
        log, restarted = self._log.read(final)
        out, out_restarted = self._stdout.read(final)
        if restarted or out_restarted:
            self._log.reset()
            self._stdout.reset()
            return self.read(final)[0], True
        text = log.decode("utf-8", "replace")
        lines = out.decode("utf-8", "replace").splitlines()
        other = "".join(f"{STDOUT_MARK}{line}\n" for line in lines if line.strip() and parse_line(line) is None)
        if other and text and not text.endswith("\n"):
            text += "\n"
        return text + other, False


class ProgressReader:
    """Follows one job's progress file from its start, reading only what was appended since the last
    :meth:`update` (byte offset); only whole lines count.

    ``summary``: what the job shows (see :func:`summarise`). With ``history``, also every loss and
    accuracy (``scale_acc``, ``disc_acc``: is the head learning, is the discriminator fooled) per
    step (``history``: ``{"loss": [(step, value), ...], ...}``): a step seen again (a resumed job
    redoing steps after its checkpoint) replaces the earlier value, and a ``start`` drops the values
    after its step, which the new run is about to redo.
    """

    def __init__(self, path: str | os.PathLike, history: bool = False) -> None:
        self.path = path
        self.keep_history = history
        self._tail = Tail(path)
        self._forget()

    def _forget(self) -> None:
        self.summary: dict[str, Any] = {}
        self._losses: dict[str, dict[float, float]] = {}

    def update(self) -> list[dict[str, Any]]:
        """Read the lines appended since the last call; returns their events (all of them again,
        from the start, when the file was replaced; none, and an empty summary, once it is removed)."""
        chunk, restarted = self._tail.read()  # a half-written last line waits for the next call
        if restarted:
            self._forget()
        events = [e for e in map(parse_line, chunk.decode("utf-8", "replace").splitlines()) if e]
        for event in events:
            summarise(self.summary, event)
            if self.keep_history:
                self._add_losses(event)
        return events

    def _add_losses(self, event: dict[str, Any]) -> None:
        step = number(event.get("step"))
        if step is None:
            return
        if event["event"] == "start":
            for values in self._losses.values():
                for later in [s for s in values if s > step]:
                    del values[later]
        elif event["event"] == "step":
            for key, value in event.items():
                if (key.startswith("loss") or key.endswith("_acc")) and number(value) is not None:
                    self._losses.setdefault(key, {})[float(step)] = float(value)

    @property
    def history(self) -> dict[str, list[tuple[float, float]]]:
        """The losses and accuracies per step so far, each series sorted by step (empty without ``history``)."""
        return {key: sorted(values.items()) for key, values in sorted(self._losses.items()) if values}
