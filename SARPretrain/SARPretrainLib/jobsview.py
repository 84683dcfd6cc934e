"""What the jobs panel shows every second without touching what did not change: the jobs table
(:class:`JobsTable`, cells written only when their text changed) and the loss plot
(:class:`LossPlot`, in the scene only when the user asks for it, then changed only by new points).

The classes make only the calls named in their docstrings on what they are given (Qt's table widget,
the scene adapter), so they are tested without Qt. ``qt`` is imported only inside :func:`table_item`.
Only the standard library is imported at module level.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from SARSegmentationLib.protocols import SARLogicError, SceneAdapter

History = Mapping[str, Sequence[tuple[float, float]]]


def table_item(text: str, tooltip: str) -> Any:
    """A ``qt.QTableWidgetItem`` showing ``text``, with a tooltip."""
    import qt

    item = qt.QTableWidgetItem(text)
    item.setToolTip(tooltip)
    return item


class JobsTable:
    """The jobs table widget, one row per job (``columns``: attributes of a
    :class:`~SARPretrainLib.jobspanel.JobRow`). A cell is written only when its text changed since the
    last :meth:`show`, so listing the jobs every second leaves an unchanged table alone.

    Calls on ``table``: ``blockSignals``, ``setRowCount``, ``setItem``, ``selectRow``,
    ``clearSelection``; ``make_item(text, tooltip)`` makes a cell (:func:`table_item`).
    """

    def __init__(self, table: Any, columns: Sequence[str],
                 make_item: Callable[[str, str], Any] = table_item) -> None:
        self.table, self.columns, self.make_item = table, tuple(columns), make_item
        self._cells: list[list[tuple[str, str]]] = []  # (text, tooltip) per cell, as last written
        self._selected = -1
        self._ids: list[str] = []  # the jobs listed last time, in their rows

    def show(self, rows: Sequence[Any], selected_id: str | None) -> str | None:
        """Show ``rows`` (newest first) with job ``selected_id`` selected, or none when that job is not
        listed (opening the module picks no job by itself); returns the selected job's id (None: none).
        Sends no selection signals."""
        cells = [[(str(getattr(row, key) or ""), row.out if key == "out" else row.id) for key in self.columns]
                 for row in rows]
        ids = [row.id for row in rows]
        selected = ids.index(selected_id) if selected_id in ids else -1
        blocked = self.table.blockSignals(True)
        try:
            if len(cells) != len(self._cells):
                self.table.setRowCount(len(cells))
            for r, row in enumerate(cells):
                for c, cell in enumerate(row):
                    if r >= len(self._cells) or self._cells[r][c] != cell:
                        self.table.setItem(r, c, self.make_item(*cell))
            if selected != self._selected or ids != self._ids:  # rows moved: a row the user clicked is another job now
                if selected >= 0:
                    self.table.selectRow(selected)
                else:
                    self.table.clearSelection()
        finally:
            self.table.blockSignals(blocked)
        self._cells, self._selected, self._ids = cells, selected, ids
        return ids[selected] if selected >= 0 else None


def _points(history: History) -> tuple:
    """What tells whether a history grew: per loss, its count and last point."""
    return tuple((key, len(values), tuple(values[-1]) if values else None) for key, values in history.items())


class LossPlot:
    """The loss curve of one job, in the scene only once the user asked for it (:meth:`show`), in the
    scene adapter's one set of plot nodes; the timer's :meth:`update` then appends the job's new
    points and does nothing else: nothing when no plot was asked for, when no point is new, or once
    the plot left the scene (removed by the user, or the scene closed: not made again until asked).

    ``history(job_id)`` gives a job's losses per step so far (read incrementally, see
    ``JobsPanelLogic.loss_history``)."""

    def __init__(self, scene: SceneAdapter, history: Callable[[str], History]) -> None:
        self.scene, self.history = scene, history
        self.job_id: str | None = None
        self._points: tuple | None = None

    def show(self, job_id: str, title: str) -> Any:
        """Plot the job's losses (the plot nodes made if missing, else reused); returns the chart node.
        :class:`SARLogicError` while the job has no loss yet."""
        history = self.history(job_id)
        chart = self.scene.loss_plot(job_id, history, title=title, create=True)
        if chart is None:
            raise SARLogicError(f"job {job_id} has no loss to plot yet; ask again after its first steps")
        self.job_id, self._points = job_id, _points(history)
        return chart

    def update(self) -> Any:
        """Append the plotted job's new points; returns the chart when it changed, else None."""
        if self.job_id is None:
            return None
        try:
            history = self.history(self.job_id)
        except Exception:  # the job can no longer be read: stop following it
            self.forget()
            raise
        points = _points(history)
        if points == self._points:
            return None
        chart = self.scene.loss_plot(self.job_id, history)
        if chart is None:  # the plot left the scene: made again only when asked
            self.forget()
        else:
            self._points = points
        return chart

    def forget(self) -> None:
        """Follow no job (the scene closes): nothing is plotted until asked again."""
        self.job_id = self._points = None
