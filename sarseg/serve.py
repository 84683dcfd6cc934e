"""``sarseg serve --model NAME``: the interactive worker. It loads a promptable model once, takes a volume
once, and answers prompt requests as JSON lines on stdin and stdout (the protocol, and the client that
drives it: :mod:`sarseg.core.worker`). Each request runs the network only on windows around its
prompts (:mod:`sarseg.prompted`), so an answer takes a fraction of a second however large the volume.

Only protocol lines go to stdout: anything else a library prints goes to stderr, like the worker's own
notes and the traceback of a request that failed unexpectedly (which is answered as an error; the
worker goes on).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import BinaryIO

import torch

from .core.errors import EXIT_OK, BadInput
from .core.worker import PROTOCOL, BadRequest, Request, encode_mask, parse_request, read_line, response
from .infer import Segmenter, predict
from .io import read_image
from .prompted import PromptSession


def protocol_output() -> BinaryIO:
    """This process's stdout for protocol lines only: file descriptor 1 (and ``sys.stdout``) then write to
    stderr, so a stray print cannot break a response."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


class Worker:
    """One model, at most one volume; :meth:`answer` serves one request."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        self.folder = folder
        self.segmenter = Segmenter.load(folder, device)
        card = self.segmenter.card
        if not card.promptable:
            raise BadInput(folder, "is not a promptable model; sarseg serve answers prompts (model.json has no 'prompts')")
        self.session: PromptSession | None = None
        self._warm_up()

    def _warm_up(self) -> None:
        """One window of zeros, so the first click does not pay for the first pass's set-up."""
        config = self.segmenter.config
        zeros = torch.zeros((self.segmenter.card.architecture.in_channels, *config.patch_zyx))
        predict(self.segmenter.net, zeros, config.patch_zyx, config.labels, config.inference, self.segmenter.device)

    def ready(self) -> bytes:
        card = self.segmenter.card
        return response(None, "ready", protocol=PROTOCOL, model=str(self.folder), modalities=list(card.modalities),
                        prompts=list(card.prompts.channels), labels=card.labels.segments(), device=str(self.segmenter.device))

    def answer(self, request: Request) -> bytes:
        start = time.perf_counter()
        if request.op == "load":
            modalities = self.segmenter.config.modalities
            image = read_image(list(request.images), modalities)
            self.session = None  # the previous volume is let go before the next one is kept
            self.session = PromptSession(self.segmenter, image)
            geometry = image.geometry
            return response(request.id, "load", size=list(geometry.size), spacing=list(geometry.spacing),
                            origin=list(geometry.origin), direction=list(geometry.direction),
                            seconds=round(time.perf_counter() - start, 4))
        if request.op == "segment":
            if self.session is None:
                raise BadInput("segment", "no volume loaded yet: send a load request first")
            result = self.session(self.session.voxels(request.prompts, "prompt"))
            mask = result.label > 0
            return response(request.id, "segment", start=result.start_xyz, size=result.size_xyz, mask=encode_mask(mask),
                            voxels=int(mask.sum()), seconds=round(time.perf_counter() - start, 4))
        return response(request.id, "shutdown")


def serve(folder: Path, device: torch.device, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Answer requests from ``stdin`` until ``shutdown`` or its end; a model that cannot serve is
    ``BadInput`` before the ``ready`` line."""
    worker = Worker(folder, device)
    try:
        stdout.write(worker.ready())
        stdout.flush()
        while (line := read_line(stdin)) is not None:
            if line.strip() and _serve_line(worker, line, stdout) == "shutdown":
                break
    except (BrokenPipeError, ConnectionResetError):  # the client is gone: nobody is left to answer
        pass
    return EXIT_OK


def _serve_line(worker: Worker, line: bytes, stdout: BinaryIO) -> str | None:
    """Answer one line (an error response for whatever goes wrong); returns the request's op."""
    request_id, op = None, None
    try:
        request = parse_request(line)
        request_id, op = request.id, request.op
        stdout.write(worker.answer(request))
    except BadRequest as exc:
        stdout.write(response(exc.id, error=exc.problem))
    except BadInput as exc:
        stdout.write(response(request_id, error=str(exc)))
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception as exc:  # a failure of this request only: say so, keep serving
        traceback.print_exc(file=sys.stderr)
        stdout.write(response(request_id, error=f"internal error: {type(exc).__name__}: {exc}"))
    stdout.flush()
    return op
