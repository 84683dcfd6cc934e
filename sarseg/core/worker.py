"""The interactive worker's protocol (``sarseg serve``) and the client that drives it, for the engine and
the Slicer modules alike. Standard library only (numpy inside the mask functions).

JSON lines over the worker's stdin and stdout, one request per line and one response per request, in
order. The worker writes ``{"id": null, "ok": true, "op": "ready", "protocol": 1, "model": ...,
"modalities": [...], "prompts": [...]}`` once its model is loaded, then answers:

- ``{"id": ID, "op": "load", "images": [PATH, ...]}`` (one file per model modality): reads and normalises
  the volume once; answers its grid (``size`` x, y, z voxels; ``spacing``; ``origin``; ``direction``).
- ``{"id": ID, "op": "segment", "points": [[x, y, z], ...], "negative": [[x, y, z], ...],
  "box": [x0, y0, z0, x1, y1, z1] | null}`` (LPS mm, as ITK reads the image; every click so far, not
  only the new one: requests are independent): segments the lesion from windows around the prompts
  only and answers ``start`` and ``size`` (x, y, z voxel indices of the crop in the loaded volume;
  nothing is segmented outside it), ``mask`` (the crop's voxels, x fastest then y then z, as ITK and
  NRRD store them, one bit each by ``numpy.packbits``, zlib-compressed, base64), ``voxels`` (how many are
  set) and ``seconds``.
- ``{"id": ID, "op": "shutdown"}``: answers, then exits 0 (so does the end of its input).

Every response carries the request's ``id`` (any JSON string or integer the client chose) and ``ok``;
``{"ok": false, "error": "..."}`` answers a malformed or failed request (``id`` null when the line held
none) and the worker goes on with the next line. Lines are at most ``MAX_LINE_BYTES``.
"""

from __future__ import annotations

import base64
import collections
import json
import queue
import subprocess
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Sequence

from . import fields, procs
from .card import MAX_IN_CHANNELS
from .errors import BadInput
from .prompts import Prompts

PROTOCOL = 1
MAX_LINE_BYTES = 1 << 20
OPS = ("load", "segment", "shutdown")
RequestId = str | int | None


class BadRequest(BadInput):
    """A request the worker cannot serve; ``id`` is the request's, when the line held one."""

    def __init__(self, request_id: RequestId, problem: str) -> None:
        super().__init__("request", problem)
        self.id = request_id


@dataclass(frozen=True)
class Request:
    id: RequestId
    op: str
    images: tuple[str, ...] = ()
    prompts: Prompts = field(default_factory=Prompts)


def parse_request(line: bytes) -> Request:
    """One request line, every field checked (``BadRequest`` says what is wrong)."""
    if len(line) > MAX_LINE_BYTES:
        raise BadRequest(None, f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        data = json.loads(line.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise BadRequest(None, f"not a JSON line ({exc})") from None
    except RecursionError:
        raise BadRequest(None, "not a JSON line (nested too deeply)") from None
    if not isinstance(data, dict):
        raise BadRequest(None, f"a request is a JSON object (got {fields.show(data)})")
    request_id = data.get("id")
    if not (request_id is None or isinstance(request_id, int) and not isinstance(request_id, bool)
            or isinstance(request_id, str) and len(request_id) <= 200):
        raise BadRequest(None, f"id must be a string of at most 200 characters or an integer (got {fields.show(request_id)})")
    try:
        op = fields.text(data.get("op"), "request", "op", OPS)
        allowed = {"load": ("images",), "segment": ("points", "negative", "box"), "shutdown": ()}[op]
        fields.mapping(data, "request", op, ("id", "op", *allowed), required=allowed if op == "load" else ())
        if op == "load":
            images = fields.array(data["images"], "request", "images", 1, MAX_IN_CHANNELS)
            return Request(request_id, op, images=tuple(fields.text(p, "request", f"images[{i}]", max_len=4096)
                                                        for i, p in enumerate(images)))
        if op == "segment":
            prompts = Prompts.from_request(data, "request")
            fields.require(bool(prompts.positive) or prompts.box is not None, "request",
                           "segment needs at least one positive point or a box")
            return Request(request_id, op, prompts=prompts)
        return Request(request_id, op)
    except BadInput as exc:
        raise BadRequest(request_id, exc.problem or str(exc)) from None


def read_line(stream: BinaryIO) -> bytes | None:
    """The next line of ``stream`` (None at its end); a line over ``MAX_LINE_BYTES`` is read to its end
    and returned cut, so :func:`parse_request` refuses it and the next line is read whole."""
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        while True:
            rest = stream.readline(MAX_LINE_BYTES)
            if not rest or rest.endswith(b"\n"):
                break
    return line


def response(request_id: RequestId, op: str | None = None, error: str | None = None, **values: Any) -> bytes:
    """A response line: ``ok`` with the op's values, or the error."""
    data: dict[str, Any] = {"id": request_id, "ok": error is None}
    data.update({"error": error} if error is not None else {"op": op, **values})
    return (json.dumps(data, allow_nan=False) + "\n").encode("utf-8")


def encode_mask(mask: Any) -> str:
    """A boolean (Z, Y, X) array as the ``mask`` of a response."""
    import numpy as np

    return base64.b64encode(zlib.compress(np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes(), 1)).decode("ascii")


def decode_mask(text: str, size_xyz: Sequence[int]) -> Any:
    """A response's ``mask`` as a boolean (Z, Y, X) array of ``size`` (x, y, z); refuses data that does not
    hold exactly that many voxels (no more is ever decompressed)."""
    import numpy as np

    count = int(size_xyz[0]) * int(size_xyz[1]) * int(size_xyz[2])
    expected = (count + 7) // 8
    try:
        inflater = zlib.decompressobj()
        packed = inflater.decompress(base64.b64decode(text, validate=True), expected + 1)
    except (ValueError, zlib.error) as exc:
        raise BadInput("mask", f"not base64 zlib data ({exc})") from None
    fields.require(len(packed) == expected and not inflater.unconsumed_tail, "mask",
                   f"holds {len(packed)} bytes, {expected} expected for {list(size_xyz)} voxels")
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=count)
    return bits.astype(bool).reshape(int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0]))


class WorkerError(RuntimeError):
    """The worker failed to start, died twice on one request, or did not answer in time."""


class WorkerClient:
    """Drives one ``sarseg serve`` process: starts it, sends requests, waits for each response (a
    ``timeout`` in seconds), and when the worker died meanwhile starts a new one, loads the last volume
    again and repeats the request once. A request the worker refused comes back as its response
    (``ok`` false); only a dead or silent worker raises :class:`WorkerError`.

    ``command``: the worker's command line, e.g. ``[python, "-m", "sarseg", "serve", "--model", NAME]``.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, timeout: float = 60.0,
                 start_timeout: float = 300.0) -> None:
        self.command, self.env = list(command), env
        self.timeout, self.start_timeout = timeout, start_timeout
        self.process: subprocess.Popen | None = None
        self.ready: dict | None = None
        self.restarts = 0
        self._lines: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._loaded: tuple[str, ...] | None = None
        self._next_id = 0
        self._closed = False

    # -- the process

    def start(self) -> dict:
        """Start the worker (when none runs) and return its ``ready`` line."""
        if self._closed:
            raise WorkerError("the worker was closed")
        if self.alive():
            return self.ready or {}
        self._lines = queue.Queue()
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=self.env, **procs.hidden(procs.this_host()))
        threading.Thread(target=self._pump, args=(self.process.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()
        self.ready = self._receive(self.start_timeout, "start")
        if not self.ready.get("ok") or self.ready.get("op") != "ready":
            self.stop()
            raise WorkerError(f"the worker did not start: {self.ready.get('error', self.ready)}{self._tail()}")
        return self.ready

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to shut down; end it when it does not within ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.stdin.write(b'{"op": "shutdown"}\n')
                process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            try:
                stream.close()
            except OSError:
                pass

    def close(self) -> None:
        """Stop for good: a request in flight or sent later raises :class:`WorkerError` instead of starting
        a new worker (a session that ended must not leave one running)."""
        self._closed = True
        self.stop()

    def __enter__(self) -> "WorkerClient":
        self.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    # -- requests

    def load(self, images: Sequence[str]) -> dict:
        reply = self.request({"op": "load", "images": [str(p) for p in images]})
        if reply.get("ok"):
            self._loaded = tuple(str(p) for p in images)
        return reply

    def segment(self, prompts: Prompts) -> dict:
        return self.request({"op": "segment", **prompts.to_request()})

    def request(self, message: dict) -> dict:
        """Send one request (an ``id`` is added when it has none) and return its response; a worker that
        died is restarted, its volume loaded again, and the request repeated once."""
        message = dict(message)
        if "id" not in message:
            self._next_id += 1
            message["id"] = self._next_id
        for _ in range(2):
            if not self.alive():
                problem = self._restart(message.get("op") != "load")
                if problem is not None:
                    return {"id": message["id"], "ok": False, "error": problem}
            reply = self._exchange(message)
            if reply is not None:
                return reply
        raise WorkerError(f"the worker died twice on request {fields.show(message.get('op'))}{self._tail()}")

    def _restart(self, reload: bool) -> str | None:
        """Start the worker (again: counted in ``restarts``) and load the last volume into it; the problem
        when that volume no longer loads."""
        if self.ready is not None:
            self.restarts += 1
        self.stop()
        self.start()
        if reload and self._loaded is not None:
            reply = self._exchange({"id": "reload", "op": "load", "images": list(self._loaded)})
            if reply is not None and not reply.get("ok"):
                return f"loading the volume again: {reply.get('error')}"
        return None

    def _exchange(self, message: dict) -> dict | None:
        """Send and receive one request; None when the worker died meanwhile."""
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            self.process.stdin.flush()
        except (OSError, ValueError):
            return None
        try:
            reply = self._receive(self.timeout, message.get("op"))
        except _Gone:
            return None
        if reply.get("id") != message.get("id"):
            self._kill()
            raise WorkerError(f"the worker answered request {reply.get('id')!r} to request {message.get('id')!r}")
        return reply

    def _receive(self, timeout: float, what: Any) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self._kill()
            raise WorkerError(f"the worker did not answer {what} within {timeout:g} s{self._tail()}") from None
        if line is None:
            if what == "start":
                self._kill()
                raise WorkerError(f"the worker exited before it was ready{self._tail()}")
            raise _Gone()
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self._kill()
            raise WorkerError(f"the worker wrote a line that is not JSON: {fields.show(line)}{self._tail()}") from None

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _tail(self) -> str:
        return ("; its last messages:\n" + "".join(self._stderr)) if self._stderr else ""

    @staticmethod
    def _pump(stream: BinaryIO, lines: queue.Queue) -> None:
        for line in iter(stream.readline, b""):
            lines.put(line.decode("utf-8", "replace"))
        lines.put(None)

    def _drain(self, stream: BinaryIO) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode("utf-8", "replace")[-2000:])


class _Gone(Exception):
    """The worker's output ended: it died."""


def serve_command(python: str, model: str, device: str = "cpu", threads: int | None = None) -> list[str]:
    """The command line of a worker for ``model`` (a name or folder)."""
    return [python, "-m", "sarseg", *(["--threads", str(threads)] if threads else []), "serve", "--model", str(model),
            "--device", device]

