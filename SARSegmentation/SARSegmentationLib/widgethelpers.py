"""What the two SAR module widgets share: the model combo box, one volume selector per model channel,
a job's state in a label, a progress bar and a log box, and a job followed on a timer.

The classes here make only the few calls named in their docstrings on the widgets and callables they
are given (Qt's and the module logic's, in Slicer), so what they decide runs and is tested without Qt.
``slicer`` and ``qt`` are imported only inside the functions that make the Qt objects or list the
scene's volumes. Only the standard library is imported at module level.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .channels import ChannelMatch, match_channels
from .jobs import JobStatus, log_tail
from .protocols import LogFollower, SARLogicError

VOLUME_NODE = "vtkMRMLScalarVolumeNode"
CHOSEN = "your choice"
CLEARED = "none chosen; choose one"


def new_timer(callback: Callable[[], None], interval_ms: int = 1000) -> Any:
    """A ``qt.QTimer`` calling ``callback`` every ``interval_ms`` once started."""
    import qt

    timer = qt.QTimer()
    timer.setInterval(interval_ms)
    timer.connect("timeout()", callback)
    return timer


def volume_selector(name: str, tooltip: str) -> Any:
    """A ``qMRMLNodeComboBox`` of the scene's scalar volumes (label maps left out), none selected."""
    import slicer

    selector = slicer.qMRMLNodeComboBox()
    selector.nodeTypes = [VOLUME_NODE]
    selector.showChildNodeTypes = False
    selector.addEnabled = False
    selector.removeEnabled = False
    selector.noneEnabled = True
    selector.noneDisplay = f"Select the {name} volume"
    selector.setMRMLScene(slicer.mrmlScene)
    selector.setToolTip(tooltip)
    return selector


def scene_volumes(scene: Any = None) -> list[Any]:
    """The volumes of ``scene`` (default: Slicer's) a :func:`volume_selector` offers: scalar volumes,
    label maps left out."""
    if scene is None:
        import slicer

        scene = slicer.mrmlScene
    nodes = [scene.GetNthNodeByClass(i, VOLUME_NODE) for i in range(scene.GetNumberOfNodesByClass(VOLUME_NODE))]
    return [node for node in nodes if node.GetClassName() == VOLUME_NODE]


def node_name(node: Any) -> str:
    return node.GetName()


def note_label() -> Any:
    """A ``qt.QLabel`` for a few lines of explanation (word-wrapped)."""
    import qt

    label = qt.QLabel()
    label.wordWrap = True
    return label


class ModelChooser:
    """A combo box of models (display name shown, folder name as item data) that one parameter of the
    parameter node remembers.

    ``models()`` lists the models to offer; ``get(name)`` reads one again (raising
    :class:`SARLogicError` when it is gone). Calls on ``combo``: ``blockSignals``, ``clear``,
    ``addItem(text, data)``, ``findData``, ``setCurrentIndex``, ``currentIndex``, ``itemData``.
    """

    def __init__(self, combo: Any, models: Callable[[], Sequence[Any]], get: Callable[[str], Any],
                 parameter: str, default: str = "") -> None:
        self.combo, self.models, self.get, self.parameter = combo, models, get, parameter
        self.default = default

    def fill(self, parameters: Any) -> None:
        """List the models again, keeping the remembered one selected while it is listed (else the
        ``default`` one when listed, else the first); the combo box sends no change signal meanwhile."""
        current = getattr(parameters, self.parameter) if parameters is not None else ""
        models = list(self.models())
        blocked = self.combo.blockSignals(True)
        try:
            self.combo.clear()
            for model in models:
                self.combo.addItem(model.display_name, model.name)
            index = self.combo.findData(current) if current else -1
            if index < 0 and self.default:
                index = self.combo.findData(self.default)
            self.combo.setCurrentIndex(index if index >= 0 else (0 if models else -1))
        finally:
            self.combo.blockSignals(blocked)

    def selected(self) -> Any:
        """The selected model, read again; None when none is, or when it was removed meanwhile."""
        name = self.combo.itemData(self.combo.currentIndex)
        if not name:
            return None
        try:
            return self.get(name)
        except SARLogicError:
            return None

    def required(self) -> Any:
        """The selected model (as :meth:`selected`); :class:`SARLogicError` when there is none."""
        model = self.selected()
        if model is None:
            raise SARLogicError("choose a model first")
        return model

    def remember(self, parameters: Any) -> Any:
        """The selected model (as :meth:`selected`), its name stored in the parameter node."""
        model = self.selected()
        if parameters is not None and model is not None and getattr(parameters, self.parameter) != model.name:
            setattr(parameters, self.parameter, model.name)
        return model


class ChannelSelectors:
    """One volume selector per model channel, each a row ``"<channel> volume:"`` of a form layout, and
    under them a note saying how each channel got its volume (:mod:`.channels`: by the volume's name,
    never by the scene's order; the user picks where no name fits).

    Rebuilding for another model keeps the volume of each channel of the same name. ``on_change()``
    runs when a selection changes; ``tooltip`` is formatted with the channel's ``number`` (from 1) and
    ``name``; ``make(name, tooltip)`` makes a selector (:func:`volume_selector`), ``make_note()`` the
    note (:func:`note_label`); ``volumes()`` lists the volumes to match (:func:`scene_volumes`), named
    by ``name_of``. Calls on ``layout``: ``rowCount``, ``removeRow``, ``addRow(text, widget)``,
    ``addRow(widget)``; on a selector: ``currentNode``, ``setCurrentNode``,
    ``connect("currentNodeChanged(vtkMRMLNode*)", slot)``; on the note: ``text``.
    """

    def __init__(self, layout: Any, on_change: Callable[[], None], tooltip: str,
                 make: Callable[[str, str], Any] = volume_selector, make_note: Callable[[], Any] = note_label,
                 volumes: Callable[[], Sequence[Any]] = scene_volumes,
                 name_of: Callable[[Any], str] = node_name) -> None:
        self.layout, self.on_change, self.tooltip, self.make = layout, on_change, tooltip, make
        self.make_note, self.volumes, self.name_of = make_note, volumes, name_of
        self.selectors: list[Any] = []
        self.matches: list[ChannelMatch] = []
        self.note: Any = None

    def rebuild(self, names: Sequence[str]) -> None:
        """A selector per channel name: the volume the same-named channel had, else the volume named
        like the channel, else none; the note says which and why."""
        previous = [(match, node) for match, node in zip(self.matches, self.nodes()) if node is not None]
        volumes = list(self.volumes())
        chosen = {}
        for index, name in enumerate(names):
            kept = next(((m, node) for m, node in previous if m.channel == name and any(node is v for v in volumes)),
                        None)
            if kept is not None:
                previous.remove(kept)
                match, node = kept
                chosen[index] = match if match.volume is node else ChannelMatch(name, node, self.name_of(node), CHOSEN)
        self.matches = match_channels(names, volumes, self.name_of, chosen)
        while self.layout.rowCount() > 0:
            self.layout.removeRow(0)
        self.selectors = []
        for index, (name, match) in enumerate(zip(names, self.matches)):
            selector = self.make(name, self.tooltip.format(number=index + 1, name=name))
            if match.volume is not None:
                selector.setCurrentNode(match.volume)
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._changed)
            self.layout.addRow(f"{name} volume:", selector)
            self.selectors.append(selector)
        self.note = self.make_note() if names else None
        if self.note is not None:
            self.layout.addRow(self.note)
            self._show_note()

    def _changed(self, node: Any = None) -> None:
        """A selection changed (the user's choice, or its volume left the scene): say so, then tell."""
        for index, (match, node) in enumerate(zip(self.matches, self.nodes())):
            if node is not match.volume:
                self.matches[index] = (ChannelMatch(match.channel, node, self.name_of(node), CHOSEN) if node is not None
                                       else ChannelMatch(match.channel, how=CLEARED))
        self._show_note()
        self.on_change()

    def _show_note(self) -> None:
        if self.note is not None:
            self.note.text = "\n".join(match.line for match in self.matches)

    def nodes(self) -> list[Any]:
        """The chosen node per channel (None where none is chosen)."""
        return [selector.currentNode() for selector in self.selectors]

    @property
    def complete(self) -> bool:
        """Whether there are channels and each has a volume."""
        return bool(self.selectors) and all(node is not None for node in self.nodes())


class JobView:
    """A job's state in a status label (``text``), a progress bar (``setRange``, ``setValue``, and
    ``show``/``hide`` with ``hide_when_idle``) and optionally a log box (``setPlainText``,
    ``appendPlainText``) that gets only the lines the job's log gained since the last look."""

    def __init__(self, label: Any, bar: Any, log_box: Any = None, hide_when_idle: bool = False,
                 log_lines: int = 200) -> None:
        self.label, self.bar, self.log_box = label, bar, log_box
        self.hide_when_idle, self.log_lines = hide_when_idle, log_lines
        self._log: tuple[str, LogFollower] | None = None  # the job whose log the box shows, and its reader

    def show(self, status: JobStatus) -> None:
        """Summary line (with the output folder, when the job has one) and percent done. A running job
        that has not reported its steps yet shows a busy bar."""
        self.label.text = status.summary + (f" -> {status.out}" if status.out else "")
        if status.state == "running" and not status.steps:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 100)
            self.bar.setValue(status.percent)
        if self.hide_when_idle and status.finished:
            self.bar.hide()
        elif self.hide_when_idle:
            self.bar.show()

    def show_log(self, job_id: str, log_reader: Callable[[str], LogFollower], final: bool = False) -> None:
        """Append the lines job ``job_id``'s log gained since the last call (``final``: the job has ended,
        its unfinished last line too). Another job's log, or one that was replaced, starts the box anew
        with the end of the whole log. Nothing is read again."""
        if self.log_box is None:
            return
        fresh = self._log is None or self._log[0] != job_id
        if fresh:
            self._log = (job_id, log_reader(job_id))
        text, restarted = self._log[1].read(final)
        if fresh or restarted:
            self.log_box.setPlainText(log_tail(text, self.log_lines))
        elif text.strip():
            self.log_box.appendPlainText(log_tail(text, self.log_lines))

    def message(self, text: str) -> None:
        """A message instead of a job's state: its first line (the rest belongs in a details box)."""
        self.label.text = str(text).strip().splitlines()[0] if str(text).strip() else ""

    def idle(self) -> None:
        """No job to show: an empty bar (hidden with ``hide_when_idle``)."""
        self.bar.setRange(0, 100)
        self.bar.setValue(0)
        if self.hide_when_idle:
            self.bar.hide()

    def read(self, job_id: str, status: Callable[[str], JobStatus],
             log_reader: Callable[[str], LogFollower]) -> JobStatus | None:
        """Show job ``job_id`` as ``status(job_id)`` gives it, and what its log gained (a reader from
        ``log_reader(job_id)``, kept while the same job is shown); None (and a message) when it cannot be
        read, e.g. its folder was removed."""
        try:
            current = status(job_id)
            self.show_log(job_id, log_reader, final=current.finished)
        except Exception as exc:  # any failure to read is shown; the GUI goes on
            self._log = None
            self.message(f"Cannot read job {job_id}: {exc}")
            self.idle()
            return None
        self.show(current)
        return current


class JobFollower:
    """Follows one job until it ends: every tick of its timer (``timer(self.tick)``, a
    :func:`new_timer`) shows the job in ``view`` (through :meth:`JobView.read`). Once the job has
    ended, or can no longer be read, the timer stops and ``on_end(job_id, status)`` runs once (status
    None when the job could not be read)."""

    def __init__(self, view: JobView, status: Callable[[str], JobStatus], log_reader: Callable[[str], LogFollower],
                 on_end: Callable[[str, JobStatus | None], None],
                 timer: Callable[[Callable[[], None]], Any] = new_timer) -> None:
        self.view, self.status, self.log_reader, self.on_end = view, status, log_reader, on_end
        self.timer = timer(self.tick)
        self.job_id: str | None = None

    def follow(self, job_id: str) -> None:
        """Show ``job_id`` now and on every tick until it ends."""
        self.job_id = job_id
        self.timer.start()
        self.tick()

    def tick(self) -> None:
        if self.job_id is None:
            self.timer.stop()
            return
        status = self.view.read(self.job_id, self.status, self.log_reader)
        if status is not None and not status.finished:
            return
        job_id, self.job_id = self.job_id, None
        self.timer.stop()
        self.on_end(job_id, status)

    def stop(self) -> None:
        """Stop the timer (the widget goes away); the job itself goes on."""
        self.timer.stop()
