"""The MRML scene side of the SAR modules (:class:`MRMLSceneAdapter`), on top of ``sarseg.mrml``.

Works on any ``vtkMRMLScene``: the Slicer application's ``slicer.mrmlScene`` or a scene made with the
``slicer-core`` wheel in plain Python (no application, no Qt). The engine (``sarseg``) and ``slicer`` are
imported on first use, so this file imports in any Python.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .protocols import SARLogicError

OUTPUT_REFERENCE = "sarSegmentationOutput"  # volume -> the segmentation SAR last wrote for it
LOSS_PLOT_ATTRIBUTE = "SAR.lossPlot"  # marks the loss plot nodes; on its table and chart: the key (job) shown


def _mrml():
    from sarseg import mrml  # the engine's MRML adapter (imports slicer)

    return mrml


def _user_error(exc: Exception) -> SARLogicError:
    return SARLogicError(str(exc))


class MRMLSceneAdapter:
    """Implements :class:`SARSegmentationLib.protocols.SceneAdapter` for a ``vtkMRMLScene``."""

    def __init__(self, scene: Any) -> None:
        if scene is None:
            raise ValueError("an MRML scene is needed")
        self.scene = scene

    # nodes
    def node(self, node_id: str | None) -> Any:
        return self.scene.GetNodeByID(node_id) if node_id else None

    def node_id(self, node: Any) -> str | None:
        return node.GetID() if node is not None else None

    def node_name(self, node: Any) -> str:
        return node.GetName() if node is not None else ""

    # volumes in and out
    def export_volumes(self, volumes: Sequence[Any], modalities: Sequence[str], folder: Path,
                       prefix: str = "input") -> list[Path]:
        """Write the volumes as one NIfTI per channel (``PREFIX_0000.nii.gz``...) on their common exact
        grid (checked: same grid, no pending transform, finite non-constant voxels)."""
        from sarseg.core.errors import BadInput
        from sarseg.io import write_image

        try:
            image = _mrml().image_from_volume_nodes(list(volumes), list(modalities))
        except BadInput as exc:
            raise _user_error(exc) from None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [write_image(folder / f"{prefix}_{c:04d}.nii.gz", image.array[c], image.geometry)
                for c in range(image.channels)]

    def unlike_training(self, volumes: Sequence[Any], expects: Any) -> list[str]:
        """How the volumes differ from what the model expects (``sarseg.core.expects.Expectations``):
        voxel size, skull stripping; empty when they look right or cannot be read (Apply then says why)."""
        from sarseg.core.errors import BadInput
        from sarseg.core.expects import background_fraction

        try:
            image = _mrml().image_from_volume_nodes(list(volumes))
        except BadInput:
            return []
        return expects.warnings(image.geometry.spacing, background_fraction(image.array))

    def load_label_map(self, path: Path, labels: Sequence[Mapping[str, Any]], reference_volume: Any,
                       segmentation_node: Any = None, name: str = "") -> Any:
        """Show a label map file (on the reference volume's grid) as segments named and colored by
        ``labels``; with ``segmentation_node`` its same-named segments are replaced in place."""
        from sarseg.core.errors import BadInput
        from sarseg.io import read_label

        mrml = _mrml()
        try:
            geometry = mrml.volume_to_geometry(reference_volume)
            label = read_label(path, reference=geometry)
            return mrml.labelmap_to_segmentation(
                self.scene, label, geometry, labels, reference_volume=reference_volume,
                segmentation_node=segmentation_node,
                name=name or f"{reference_volume.GetName()} SAR segmentation")
        except BadInput as exc:
            raise _user_error(exc) from None

    def roi_box_lps(self, roi_node: Any) -> tuple[float, float, float, float, float, float]:
        """The ROI's world bounding box as ``sarseg segment --roi`` wants it: x0 y0 z0 x1 y1 z1 in LPS mm.

        Slicer works in RAS: L = -R and P = -A, so the x and y bounds swap and change sign. A rotated
        ROI gives its axis-aligned bounding box."""
        if roi_node is None or not roi_node.IsA("vtkMRMLMarkupsROINode"):
            raise SARLogicError("the region of interest must be a markups ROI")
        bounds = [0.0] * 6
        roi_node.GetRASBounds(bounds)
        r0, r1, a0, a1, s0, s1 = (float(b) for b in bounds)
        if not all(math.isfinite(b) for b in bounds) or r1 <= r0 or a1 <= a0 or s1 <= s0:
            raise SARLogicError(f"ROI '{roi_node.GetName()}' is empty; place it around the tumor first")
        return (-r1 + 0.0, -a1 + 0.0, s0, -r0 + 0.0, -a0 + 0.0, s1)

    # subject hierarchy and bookkeeping
    def place_in_study(self, node: Any, reference_node: Any) -> None:
        """Put ``node`` under the same subject hierarchy parent (study) as ``reference_node``."""
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if hierarchy is None or node is None or reference_node is None:
            return
        reference_item = hierarchy.GetItemByDataNode(reference_node)
        if not reference_item:
            return
        parent = hierarchy.GetItemParent(reference_item)
        item = hierarchy.GetItemByDataNode(node)
        if item:
            if hierarchy.GetItemParent(item) != parent:
                hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)

    def remembered_output(self, volume: Any) -> Any:
        """The segmentation SAR last wrote for this volume (kept in the scene), when still there."""
        if volume is None:
            return None
        node = volume.GetNodeReference(OUTPUT_REFERENCE)
        return node if node is not None and node.IsA("vtkMRMLSegmentationNode") else None

    def remember_output(self, volume: Any, segmentation_node: Any) -> None:
        if volume is not None:
            volume.SetNodeReferenceID(OUTPUT_REFERENCE, segmentation_node.GetID() if segmentation_node else None)

    def output_owners(self, segmentation_node: Any) -> list:
        """The volumes whose result ``segmentation_node`` holds: its reference geometry volume (the one
        the segment editor draws on) and every volume that remembers it as its SAR output."""
        import slicer

        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        reference = segmentation_node.GetNodeReference(role)
        owners = [reference] if reference is not None else []
        node_id = segmentation_node.GetID()
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")):
            volume = self.scene.GetNthNodeByClass(i, "vtkMRMLVolumeNode")
            if volume.GetNodeReferenceID(OUTPUT_REFERENCE) == node_id and all(volume is not o for o in owners):
                owners.append(volume)
        return owners

    def segments(self, segmentation_node: Any) -> list[tuple[str, tuple[float, float, float]]]:
        """(name, color) of each segment, in order."""
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise SARLogicError("no segmentation selected")
        segmentation = segmentation_node.GetSegmentation()
        out = []
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            out.append((segment.GetName(), tuple(float(c) for c in segment.GetColor())))
        return out

    # training cases
    def write_training_case(self, volumes: Sequence[Any], segmentation_node: Any, name_to_value: Mapping[str, int],
                            folder: Path, case_id: str, modalities: Sequence[str] = (), overwrite: bool = False) -> dict:
        from sarseg.core.errors import BadInput

        try:
            return _mrml().write_training_case(self.scene, list(volumes), segmentation_node, dict(name_to_value),
                                               Path(folder), case_id, list(modalities), overwrite=overwrite)
        except BadInput as exc:
            raise _user_error(exc) from None

    # loss curves
    def loss_plot(self, key: str, history: Mapping[str, Sequence[tuple[float, float]]], title: str = "",
                  create: bool = False) -> Any:
        """The one SAR loss plot (a table, a chart, a line per loss), showing ``history`` (see
        ``sarseg.core.progress.ProgressReader.history``) of ``key`` (a job); returns the chart node.

        With ``create`` (the user asked) the nodes are made when missing and reused for every key;
        without it nothing is added: None when the plot is not in the scene (never asked for, removed,
        scene closed) or shows another key. The table changes only when the history has new points,
        appended after its last row; it is refilled only for another key, other losses, or a history
        that no longer continues it (a resumed job redid steps). None also when ``history`` is empty."""
        losses = [name for name, values in history.items() if values]
        table_node, chart = self._loss_plot_node("vtkMRMLTableNode"), self._loss_plot_node("vtkMRMLPlotChartNode")
        if not losses or not create and (table_node is None or chart is None
                                       or table_node.GetAttribute(LOSS_PLOT_ATTRIBUTE) != key):
            return None
        rows = loss_rows(history, losses)
        if table_node is None:
            table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "SAR losses")
        new_chart = chart is None
        if new_chart:
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "SAR loss curve")
            chart.SetXAxisTitle("step")
            chart.SetYAxisTitle("loss")
        refilled = not self._append_loss_rows(table_node, key, losses, rows)
        if refilled:
            self._fill_loss_table(table_node, losses, rows)
        if refilled or new_chart:
            self._set_loss_series(chart, table_node, losses)
        for node in (table_node, chart):
            if node.GetAttribute(LOSS_PLOT_ATTRIBUTE) != key:
                node.SetAttribute(LOSS_PLOT_ATTRIBUTE, key)
        if title and chart.GetTitle() != title:
            chart.SetTitle(title)
        return chart

    def _loss_plot_nodes(self, class_name: str) -> list[Any]:
        count = self.scene.GetNumberOfNodesByClass(class_name)
        nodes = [self.scene.GetNthNodeByClass(i, class_name) for i in range(count)]
        return [node for node in nodes if node is not None and node.GetAttribute(LOSS_PLOT_ATTRIBUTE) is not None]

    def _loss_plot_node(self, class_name: str) -> Any:
        return next(iter(self._loss_plot_nodes(class_name)), None)

    @staticmethod
    def _append_loss_rows(table_node: Any, key: str, losses: list[str], rows: list[list[float]]) -> bool:
        """Append the rows after the table's last one when the table shows ``key``'s ``losses`` and its
        last row is still in ``rows`` at the same place (nothing at all when no row is new); False when
        the table must be refilled."""
        table = table_node.GetTable()
        count = table.GetNumberOfRows()
        columns = [table.GetColumn(i) for i in range(table.GetNumberOfColumns())]
        if (table_node.GetAttribute(LOSS_PLOT_ATTRIBUTE) != key or [c.GetName() for c in columns] != ["step", *losses]
                or not 0 < count <= len(rows) or not _same_row([c.GetValue(count - 1) for c in columns],
                                                              rows[count - 1])):
            return False
        if count == len(rows):
            return True
        was_modifying = table_node.StartModify()
        for row in rows[count:]:
            for column, value in zip(columns, row):
                column.InsertNextValue(value)
        table.Modified()
        table_node.Modified()
        table_node.EndModify(was_modifying)
        return True

    @staticmethod
    def _fill_loss_table(table_node: Any, losses: list[str], rows: list[list[float]]) -> None:
        import vtk

        table = table_node.GetTable()
        was_modifying = table_node.StartModify()
        while table.GetNumberOfColumns():
            table.RemoveColumn(table.GetNumberOfColumns() - 1)
        for index, name in enumerate(["step", *losses]):
            array = vtk.vtkDoubleArray()
            array.SetName(name)
            array.SetNumberOfValues(len(rows))
            for i, row in enumerate(rows):
                array.SetValue(i, row[index])
            table.AddColumn(array)
        table.Modified()
        table_node.Modified()
        table_node.EndModify(was_modifying)

    def _set_loss_series(self, chart: Any, table_node: Any, losses: list[str]) -> None:
        """A line per loss: the plot's series nodes (the chart's first) reused in order, new ones made,
        extra ones removed."""
        import slicer

        series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
        series = [node for node in series if node is not None]
        series += [node for node in self._loss_plot_nodes("vtkMRMLPlotSeriesNode") if node not in series]
        chart.RemoveAllPlotSeriesNodeIDs()
        for extra in series[len(losses):]:
            self.scene.RemoveNode(extra)
        for index, loss in enumerate(losses):
            if index < len(series):
                node = series[index]
                node.SetName(loss)
            else:
                node = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", loss)
                node.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
                node.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
                node.SetAttribute(LOSS_PLOT_ATTRIBUTE, "series")
            node.SetAndObserveTableNodeID(table_node.GetID())
            node.SetXColumnName("step")
            node.SetYColumnName(loss)
            chart.AddAndObservePlotSeriesNodeID(node.GetID())


def loss_rows(history: Mapping[str, Sequence[tuple[float, float]]], losses: Sequence[str]) -> list[list[float]]:
    """The rows of the loss table: ``[step, value per loss]`` for every step of any of ``losses``, in
    step order (NaN where a loss has no value at that step)."""
    values = {loss: dict(history[loss]) for loss in losses}
    steps = sorted({step for loss in losses for step in values[loss]})
    return [[float(step), *(float(values[loss].get(step, math.nan)) for loss in losses)] for step in steps]


def _same_row(shown: Sequence[Any], row: Sequence[float]) -> bool:
    """Whether a table row (as read back; NaN for no value) holds ``row``."""
    return len(shown) == len(row) and all(
        x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(shown, row))
