"""Interactive lesion segmentation in the scene (:class:`InteractiveLogic`): clicks and a box placed with
Slicer's markups, answered live by a ``sarseg serve`` worker holding a promptable model.

One session is one promptable model and one volume: :meth:`InteractiveLogic.start` exports the volume
(as a segment job's input is exported), starts the worker through an injected client factory
(:func:`worker_client` by default: ``sarseg.core.worker.WorkerClient``, which restarts a worker that
died and loads the volume into it again) and loads the volume once.

Prompts come from a positive and a negative point list and an ROI, read in world RAS and sent in LPS
(x and y negated), the worker's physical space. A point outside the volume is refused here, with a
message naming it, and nothing is sent.

Not blocking the GUI: each request runs on a short-lived thread that only waits for the worker's answer
(``WorkerClient.segment`` blocks on the pipe and, when the worker died, restarts it and loads the volume
again: all of that stays off the GUI thread too). The answer is handed over through a queue and applied
to MRML only on the GUI thread, by :meth:`InteractiveLogic.poll` (the widget calls it from a timer; MRML
is not thread-safe). A non-blocking send/poll on the client would have to duplicate the client's
restart-and-repeat logic; one thread per request keeps the client as it is. At most one request is in
flight (the worker answers in order); prompts changed meanwhile are a new step, and when the answer
comes back only the newest step is requested next (latest wins: the steps in between are never
computed) and an answer for an older step is not shown (kept with its step, for undo).

Each prompt change is a step of the undo history (the markups state, its prompts and, once it came, the
answer): :meth:`InteractiveLogic.undo` puts the markups back as they were one step before and shows
the segment kept for that step. The answer is the whole lesion from all prompts, so the preview segment
is cleared and the answer's crop written (``sarseg.mrml.set_segment_crop``).
:meth:`~InteractiveLogic.accept` turns the preview into a numbered segment ("lesion 1", ...); a case
of the accepted segment goes into the model's training set through an injected
:class:`~.protocols.TrainingSet` (SAR Pretrain's ``TrainingSetLogic``: this package does not import
that one, which imports this one). Removing the volume or closing the scene ends the session and shuts
the worker down. No Qt here; ``slicer``, ``vtk``, numpy and the engine are imported on first use.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .models import ModelInfo, work_root
from .protocols import ModelStore, SARLogicError, SceneAdapter, TrainingSet

DEBOUNCE_MS = 300  # the widget waits this long after the last markup change before asking
PREVIEW = "lesion"  # the segment the answers go to
ACCEPTED = "lesion {number}"
PREVIEW_COLOR = (1.0, 0.85, 0.1)
_ACCEPTED_NAME = re.compile(r"^lesion (\d+)$")
LESION_CLICK = "lesion-click"  # the built-in promptable model, offered first
SAMPLE = "MRBrainTumor1"  # Slicer's SampleData name (Modules/Scripted/SampleData, v5.10.0 and since)
SAMPLE_HINT = (
    "Loaded MRBrainTumor1: a T1 post-contrast head MR with a brain tumor, not skull-stripped. Choose "
    f"{LESION_CLICK}, Start, then click inside the tumor; add points outside it where the segment spills over, "
    "or a box around it. lesion-click takes one volume of any modality; glioma-mr4 needs four co-registered, "
    "skull-stripped channels (FLAIR, T1, T1c, T2) and cannot run on this scan.")

Point = tuple[float, float, float]


@dataclass(frozen=True)
class MarkupsState:
    """What the markups held at one step: placed points (world RAS), and the ROI or None: its object-to-node
    matrix (16 values: center and rotation, so turning the box is a change and undo turns it back) and size."""

    positive: tuple[Point, ...] = ()
    negative: tuple[Point, ...] = ()
    roi: tuple[tuple[float, ...], Point] | None = None


@dataclass(frozen=True)
class Answer:
    """The worker's segmentation: the crop (``start``, ``size``: x, y, z voxels) and its (Z, Y, X) mask."""

    start: tuple[int, int, int]
    size: tuple[int, int, int]
    mask: Any
    voxels: int
    seconds: float


@dataclass
class Step:
    state: MarkupsState
    prompts: Any  # sarseg.core.prompts.Prompts
    answer: Answer | None = None
    error: str = ""


def worker_client(model: ModelInfo, device: str = "cpu", threads: int | None = None) -> Any:
    """The default client factory: a ``sarseg serve`` worker for ``model`` run by Slicer's Python, in an
    environment that imports this same engine and uses the SAR folders Slicer was given."""
    from sarseg.core import paths
    from sarseg.core.jobs import engine_env
    from sarseg.core.worker import WorkerClient, serve_command

    from .jobs import slicer_python

    return WorkerClient(serve_command(slicer_python(), str(model.path), device, threads),
                        env=engine_env(paths.environment()))


class InteractiveLogic:
    """One interactive session at a time; no Qt, no ``slicer.app`` (the scene comes in ``scene``).

    ``models``: :class:`~.protocols.ModelStore`; ``scene``: :class:`~.protocols.SceneAdapter`;
    ``client_factory``: ``ModelInfo -> client`` (``start``, ``load``, ``segment``, ``close``,
    ``restarts``: ``sarseg.core.worker.WorkerClient``); ``training``: where accepted cases go (None: not
    offered); ``work_folder``: where the volume is exported."""

    def __init__(self, models: ModelStore, scene: SceneAdapter, client_factory: Callable[[ModelInfo], Any] = worker_client,
                 training: TrainingSet | None = None, work_folder: str | Path | None = None) -> None:
        self.models, self.scene, self.client_factory, self.training = models, scene, client_factory, training
        self.work_folder = Path(work_folder) if work_folder is not None else work_root() / "interactive"
        self.model: ModelInfo | None = None
        self.volume: Any = None
        self.segmentation: Any = None
        self.markups: tuple[Any, Any, Any] = (None, None, None)
        self.client: Any = None
        self.steps: list[Step] = []
        self.message = ""
        self.accepted: str | None = None  # the segment ID accepted last
        self.case_id: str | None = None  # the training case this session's volume was added as
        self._spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
        self._grid: tuple = ()  # the volume's grid in the scene at Start: what the worker holds
        self._folder: Path | None = None
        self._answers: queue.Queue = queue.Queue()
        self._in_flight: Step | None = None
        self._restarts = 0
        self._observations: list[tuple[int, Any]] = []
        self.preview_answer: Answer | None = None  # the answer the preview segment shows

    # -- the session

    @property
    def active(self) -> bool:
        return self.client is not None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    @property
    def can_undo(self) -> bool:
        return self.active and len(self.steps) > 1

    @property
    def can_accept(self) -> bool:
        """A preview with voxels is shown (what Accept keeps)."""
        return (self.active and self.preview_answer is not None and bool(self.preview_answer.voxels)
                and self._preview_id() is not None)

    @property
    def can_add(self) -> bool:
        """A segment accepted in this session is still there (what Add to training set writes)."""
        return (self.active and self.accepted is not None and self.segmentation is not None
                and self.segmentation.GetSegmentation().GetSegment(self.accepted) is not None)

    def start(self, model_name: str, volume: Any) -> str:
        """Start a session: export the volume, start the worker, load the volume (this waits for the worker,
        seconds; the widget shows a wait cursor). Ends the session running before. Returns the status."""
        self.stop()
        model = self.models.get(model_name)
        if not model.card.promptable:
            raise SARLogicError(f"model {model.name!r} is not promptable: choose a model that takes clicks")
        if len(model.modalities) != 1:
            raise SARLogicError(f"model {model.name!r} takes {len(model.modalities)} channels; the interactive "
                                "section segments one volume")
        if volume is None:
            raise SARLogicError("select the volume to segment")
        self.work_folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="interactive-", dir=self.work_folder))
        client = None
        try:
            images = self.scene.export_volumes([volume], model.modalities, folder)
            client = self.client_factory(model)
            client.start()
            reply = client.load([str(p) for p in images])
            if not reply.get("ok"):
                raise SARLogicError(f"the worker could not load volume '{self.scene.node_name(volume)}': {reply.get('error')}")
        except Exception:
            if client is not None:
                client.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.model, self.volume, self.client, self._folder = model, volume, client, folder
        self._spacing = tuple(float(s) for s in reply["spacing"])  # type: ignore[assignment]
        self._grid = grid_of(volume)
        self._restarts = client.restarts
        self.segmentation = self._segmentation_node(volume)
        self.case_id = None
        self.steps = [Step(MarkupsState(), _prompts(), Answer((0, 0, 0), (0, 0, 0), None, 0, 0.0))]
        self._observe(volume.GetScene())
        self.message = f"Ready: {model.name} on '{self.scene.node_name(volume)}'. Place a point inside the lesion."
        return self.message

    def stop(self, reason: str = "") -> None:
        """End the session: the worker is shut down (also one answering now), the preview left as it is."""
        for tag, scene in self._observations:
            scene.RemoveObserver(tag)
        self._observations = []
        client, self.client = self.client, None
        if client is not None:
            client.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self.volume, self.steps, self._in_flight, self.preview_answer = None, [], None, None
        self._answers = queue.Queue()  # an answer still on its way goes to the old queue
        if reason:
            self.message = reason

    def follow(self, model_name: str, volume: Any) -> bool:
        """The selected model and volume (the widget's): a session on others ends, its worker shut down, so
        clicks never segment a volume that is no longer the selected one. Returns whether one ended."""
        if self.client is None or (model_name == self.model.name and volume is not None
                                   and volume.GetID() == self.volume.GetID()):
            return False
        self.stop("The model or volume selection changed: the interactive session ended; Start again.")
        return True

    def set_markups(self, positive: Any = None, negative: Any = None, roi: Any = None) -> None:
        """The point lists (vtkMRMLMarkupsFiducialNode) and the ROI (vtkMRMLMarkupsROINode) read as prompts."""
        self.markups = (positive, negative, roi)

    # -- prompts to answers

    def update(self) -> bool:
        """The markups changed (the widget calls this debounced): a new step and a request for it, unless
        the prompts are those of the step shown. A point outside the volume is a ``SARLogicError`` and no
        step. Returns whether a step was added."""
        self._require_session()
        state = self._read_markups()
        if state == self.steps[-1].state:
            return False
        step = Step(state, self._prompts(state))
        self.steps.append(step)
        if not step.prompts.positive and step.prompts.box is None:
            step.answer = self.steps[0].answer  # nothing to segment: an empty preview, no request
            self.message = "Place a point inside the lesion (or a box around it)."
        self._next()
        return True

    def poll(self) -> bool:
        """Apply the answers that came back (GUI thread) and send the next request; returns whether
        anything changed (then :attr:`message` says how it went)."""
        changed = False
        while True:
            try:
                step, reply = self._answers.get_nowait()
            except queue.Empty:
                break
            changed = True
            self._in_flight = None
            if isinstance(reply, Exception):  # its first line in the status, all of it (the worker's stderr) in the log
                detail = str(reply).strip() or type(reply).__name__
                logging.error(f"SAR interactive: the worker failed: {detail}")
                step.error = f"The worker failed: {detail.splitlines()[0]} (details in the Python console)"
            elif not reply.get("ok"):
                step.error = f"The worker refused the prompts: {reply.get('error')}"
            else:
                try:
                    step.answer = self._answer(reply)
                except (KeyError, TypeError, ValueError) as exc:  # a reply of another version, or damaged
                    logging.error(f"SAR interactive: unreadable answer {reply!r:.500}")
                    step.error = f"The worker's answer could not be read ({type(exc).__name__}: {exc})"
            if step.error and step is self.steps[-1]:
                self.message = step.error
        if changed and self.client is not None:
            try:
                self._next()
            except Exception as exc:  # writing the segment failed: said, not left at "Segmenting..."
                logging.exception("SAR interactive: could not show the segment")
                self.message = f"Could not show the segment: {exc} (details in the Python console)"
        return changed

    def wait(self, timeout: float = 60.0) -> str:
        """Poll until no request is in flight (scripts and tests; the widget polls from a timer)."""
        deadline = time.monotonic() + timeout
        while self.busy:
            if time.monotonic() > deadline:
                raise SARLogicError(f"the worker did not answer in {timeout:.0f} s")
            time.sleep(0.01)
            self.poll()
        return self.message

    def _next(self) -> None:
        """Show the newest step when its answer is there, else ask for it when nothing is in flight."""
        top = self.steps[-1]
        if top.answer is not None:
            if self.preview_answer is not top.answer:
                self._show(top.answer)
        elif not top.error and self._in_flight is None:
            self._send(top)

    def _send(self, step: Step) -> None:
        self._in_flight = step
        client, answers = self.client, self._answers

        def ask() -> None:
            try:
                answers.put((step, client.segment(step.prompts)))
            except Exception as exc:  # a dead or silent worker: shown, the session goes on
                answers.put((step, exc))

        threading.Thread(target=ask, name="SAR interactive request", daemon=True).start()
        self.message = "Segmenting..."

    def _answer(self, reply: dict) -> Answer:
        from sarseg.core.worker import decode_mask

        size = tuple(int(v) for v in reply["size"])
        return Answer(tuple(int(v) for v in reply["start"]), size, decode_mask(reply["mask"], size),  # type: ignore[arg-type]
                      int(reply["voxels"]), float(reply["seconds"]))

    def _show(self, answer: Answer) -> None:
        """Write ``answer`` as the whole preview segment (cleared, then its crop). An empty answer adds no
        segment: after Accept or Reset an answer still in flight must not leave an empty 'lesion' behind."""
        from sarseg import mrml

        if answer.mask is not None or self._preview_id() is not None:
            if self.segmentation is None:  # the user deleted it: a new one, in the scene
                self.segmentation = self._segmentation_node(self.volume)
            mrml.set_segment_crop(self.segmentation, PREVIEW, self.volume, answer.start, answer.mask, PREVIEW_COLOR)
        self.preview_answer = answer
        millilitres = answer.voxels * self._spacing[0] * self._spacing[1] * self._spacing[2] / 1000.0
        restarted = self.client.restarts - self._restarts if self.client is not None else 0
        self._restarts += restarted
        note = " (the worker had stopped and was restarted)" if restarted else ""
        self.message = (f"Segmented in {answer.seconds:.2f} s, {millilitres:.1f} ml{note}." if answer.mask is not None
                        else "Place a point inside the lesion (or a box around it).")

    # -- undo, accept, reset

    def undo(self) -> bool:
        """Back one step: the markups as they were before the last change, the segment kept for that state
        (asked for when it was never computed). Returns False when there is nothing to undo."""
        self._require_session()
        if not self.can_undo:
            return False
        self.steps.pop()
        self._write_markups(self.steps[-1].state)
        self.steps[-1].error = ""
        self._next()
        return True

    def accept(self) -> str:
        """The preview becomes segment "lesion N" (the next free number); markups and history are
        cleared, so the next clicks start a new lesion. Returns the new segment's name."""
        self._require_session()
        if not self.can_accept:
            raise SARLogicError("nothing to accept: place a point inside the lesion and wait for the segment")
        segmentation = self.segmentation.GetSegmentation()
        taken = [int(m.group(1)) for i in range(segmentation.GetNumberOfSegments())
                 if (m := _ACCEPTED_NAME.match(segmentation.GetNthSegment(i).GetName()))]
        name = ACCEPTED.format(number=max(taken, default=0) + 1)
        segment_id = self._preview_id()
        segmentation.GetSegment(segment_id).SetName(name)
        self.accepted = segment_id
        self._clear_markups()
        self.message = f"Accepted as '{name}'. Place points for the next lesion."
        return name

    def reset(self) -> None:
        """Cancel the lesion being segmented: markups cleared, the preview segment removed."""
        self._require_session()
        self._clear_markups()
        segment_id = self._preview_id()
        if segment_id is not None:
            self.segmentation.GetSegmentation().RemoveSegment(segment_id)
        self.message = "Cleared. Place a point inside the lesion."

    def _clear_markups(self) -> None:
        self._write_markups(MarkupsState())
        self.steps = self.steps[:1]
        self.preview_answer = None  # an answer still in flight is for a step no longer there: not shown

    # -- training set

    def add_to_training_set(self, case_id: str = "") -> dict:
        """The volume and every accepted lesion on it ("lesion N" segments, the model's one label) as one
        case of the model's training set (fine-tune it in SAR Pretrain): a lesion left out would teach the
        model that it is background. Adding again in the same session rewrites that case (``case_id``
        names another). Returns the case's entry."""
        self._require_session()
        if self.training is None:
            raise SARLogicError("no training set here (the SAR Pretrain module is not installed)")
        if not self.can_add:
            raise SARLogicError("accept a segment first")
        source = self.segmentation.GetSegmentation()
        lesions = [source.GetNthSegmentID(i) for i in range(source.GetNumberOfSegments())
                   if _ACCEPTED_NAME.match(source.GetNthSegment(i).GetName())]
        label = self.model.labels[0]["name"]
        scene = self.volume.GetScene()
        case = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"SAR case {label}")
        try:
            case.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
            for segment_id in lesions:
                case.GetSegmentation().CopySegmentFromSegmentation(source, segment_id)
                case.GetSegmentation().GetSegment(segment_id).SetName(label)
            again = not case_id and self.case_id is not None  # this session's own case, rewritten
            entry = self.training.add_case(self.model.name, [self.volume], case, case_id=case_id or self.case_id or "",
                                           overwrite=again)
        finally:
            scene.RemoveNode(case)
        self.case_id = entry["case_id"]
        self.message = (f"Added case '{entry['case_id']}' ({len(lesions)} lesion{'s' if len(lesions) != 1 else ''}) "
                        f"to the training set of {self.model.name}.")
        return entry

    # -- the scene

    def _require_session(self) -> None:
        if self.client is None:
            raise SARLogicError("start a session first (choose a promptable model and a volume)")

    def _segmentation_node(self, volume: Any) -> Any:
        """The segmentation SAR keeps for this volume, else a new one in its study."""
        node = self.scene.remembered_output(volume)
        if node is None:
            node = volume.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", f"{self.scene.node_name(volume)} lesions")
            node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            self.scene.place_in_study(node, volume)
            self.scene.remember_output(volume, node)
        return node

    def _preview_id(self) -> str | None:
        if self.segmentation is None:
            return None
        return self.segmentation.GetSegmentation().GetSegmentIdBySegmentName(PREVIEW) or None

    def _observe(self, scene: Any) -> None:
        import slicer

        def removed(caller: Any, event: Any) -> None:
            if self.volume is not None and not scene.IsNodePresent(self.volume):
                self.stop("The volume was removed: the interactive session ended.")
            elif self.segmentation is not None and not scene.IsNodePresent(self.segmentation):
                self.segmentation, self.preview_answer, self.accepted = None, None, None  # made again when needed

        def closing(caller: Any, event: Any) -> None:
            self.stop("The scene was closed: the interactive session ended.")

        self._observations = [(scene.AddObserver(slicer.vtkMRMLScene.NodeRemovedEvent, removed), scene),
                              (scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, closing), scene)]

    def _read_markups(self) -> MarkupsState:
        positive, negative, roi = self.markups
        box = None
        if roi is not None and roi.GetNumberOfDefinedControlPoints() > 0:
            matrix = roi.GetObjectToNodeMatrix()
            box = (tuple(matrix.GetElement(r, c) for r in range(4) for c in range(4)),
                   tuple(float(s) for s in roi.GetSize()))
        return MarkupsState(placed_points(positive), placed_points(negative), box)  # type: ignore[arg-type]

    def _write_markups(self, state: MarkupsState) -> None:
        positive, negative, roi = self.markups
        set_points(positive, state.positive)
        set_points(negative, state.negative)
        if roi is not None:
            if state.roi is None:
                roi.RemoveAllControlPoints()
            else:
                import vtk

                elements, size = state.roi
                if roi.GetNumberOfDefinedControlPoints() == 0:
                    roi.AddControlPoint(vtk.vtkVector3d(elements[3], elements[7], elements[11]))
                matrix = vtk.vtkMatrix4x4()
                matrix.DeepCopy(elements)
                roi.SetAndObserveObjectToNodeMatrix(matrix)
                roi.SetSize(*size)

    def _prompts(self, state: MarkupsState) -> Any:
        """The step's prompts in LPS mm; a point outside the volume, or a volume moved since Start (the
        worker would segment it where it was), is refused."""
        name = self.scene.node_name(self.volume)
        transform = self.volume.GetParentTransformNode()
        if transform is not None:
            raise SARLogicError(f"volume '{name}' is now under transform '{transform.GetName()}', the model holds it "
                                "as it was: harden or remove the transform, then Start again")
        if grid_of(self.volume) != self._grid:
            raise SARLogicError(f"volume '{name}' moved or changed since Start: Start again to segment it as it is now")
        positive, negative, roi = self.markups
        for node, points in ((positive, state.positive), (negative, state.negative)):
            for number, point in enumerate(points, 1):
                if not inside(self.volume, point):
                    raise SARLogicError(
                        f"point {number} of '{self.scene.node_name(node)}' (R {point[0]:.1f}, A {point[1]:.1f}, "
                        f"S {point[2]:.1f}) lies outside volume '{self.scene.node_name(self.volume)}': move it "
                        "inside or delete it")
        box = self.scene.roi_box_lps(roi) if state.roi is not None else None
        return _prompts(tuple(map(ras_to_lps, state.positive)), tuple(map(ras_to_lps, state.negative)), box)


def _prompts(positive: Sequence[Point] = (), negative: Sequence[Point] = (), box: Any = None) -> Any:
    from sarseg.core.prompts import Prompts

    return Prompts(tuple(positive), tuple(negative), box)


def ras_to_lps(point: Sequence[float]) -> Point:
    return (-float(point[0]) + 0.0, -float(point[1]) + 0.0, float(point[2]))


def placed_points(node: Any) -> tuple[Point, ...]:
    """The world RAS positions of a point list's placed points (not those being placed or skipped)."""
    if node is None:
        return ()
    import slicer

    points = []
    for i in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(i) == slicer.vtkMRMLMarkupsNode.PositionDefined:
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(i, position)
            points.append(tuple(position))
    return tuple(points)


def set_points(node: Any, points: Sequence[Point]) -> None:
    """Make the point list hold ``points`` (world RAS): the first ones moved where needed (keeping their
    labels), extra ones removed, missing ones added."""
    if node is None:
        return
    import vtk

    while node.GetNumberOfControlPoints() > len(points):
        node.RemoveNthControlPoint(node.GetNumberOfControlPoints() - 1)
    for i, point in enumerate(points):
        if i < node.GetNumberOfControlPoints():
            node.SetNthControlPointPositionWorld(i, *point)
        else:
            node.AddControlPointWorld(vtk.vtkVector3d(*point))


def grid_of(volume: Any) -> tuple:
    """The volume's voxel grid in the scene: its IJK-to-RAS matrix and dimensions."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return tuple(matrix.GetElement(r, c) for r in range(4) for c in range(4)), tuple(volume.GetImageData().GetDimensions())


def inside(volume: Any, ras: Sequence[float]) -> bool:
    """Whether the world RAS point lies within the volume's voxels (to their outer faces)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(matrix)
    ijk = matrix.MultiplyPoint((*ras, 1.0))[:3]
    dims = volume.GetImageData().GetDimensions()
    return all(-0.5 <= v <= d - 0.5 for v, d in zip(ijk, dims))


__all__ = ["ACCEPTED", "DEBOUNCE_MS", "LESION_CLICK", "PREVIEW", "SAMPLE", "SAMPLE_HINT", "Answer", "InteractiveLogic", "MarkupsState", "Step", "grid_of", "inside",
           "placed_points", "ras_to_lps", "set_points", "worker_client"]
