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
LOSS_PLOT_ATTRIBUTE = "SAR.lossPlot"


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
                            folder: Path, case_id: str, modalities: Sequence[str] = ()) -> dict:
        from sarseg.core.errors import BadInput

        try:
            return _mrml().write_training_case(self.scene, list(volumes), segmentation_node, dict(name_to_value),
                                               Path(folder), case_id, list(modalities))
        except BadInput as exc:
            raise _user_error(exc) from None

    # loss curves
    def update_loss_plot(self, name: str, history: Mapping[str, Sequence[tuple[float, float]]]) -> Any:
        """A plot chart (one line per loss over the steps) fed from ``history`` (see
        ``sarseg.core.progress.ProgressReader.history``).

        The table, series and chart nodes are found again by name, so calling this every second
        updates the same chart. Returns the chart node (None when there is nothing to plot yet)."""
        import slicer
        import vtk

        history = {k: list(v) for k, v in history.items() if v}
        if not history:
            return None
        table_node = self._tagged("vtkMRMLTableNode", name) or self._tag(
            self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} losses"), name)
        steps = sorted({step for values in history.values() for step, _ in values})
        index = {step: i for i, step in enumerate(steps)}
        table = table_node.GetTable()
        was_modifying = table_node.StartModify()
        while table.GetNumberOfColumns():
            table.RemoveColumn(table.GetNumberOfColumns() - 1)
        columns = {"step": [float(s) for s in steps]}
        for key, values in history.items():
            column = [math.nan] * len(steps)
            for step, value in values:
                column[index[step]] = float(value)
            columns[key] = column
        for key, values in columns.items():
            array = vtk.vtkDoubleArray()
            array.SetName(key)
            array.SetNumberOfValues(len(values))
            for i, value in enumerate(values):
                array.SetValue(i, value)
            table.AddColumn(array)
        table.Modified()
        table_node.Modified()
        table_node.EndModify(was_modifying)

        chart = self._tagged("vtkMRMLPlotChartNode", name) or self._tag(
            self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} loss curve"), name)
        chart.SetTitle(f"{name}: training loss")
        chart.SetXAxisTitle("step")
        chart.SetYAxisTitle("loss")
        for key in history:
            series_name = f"{name} {key}"
            series = None
            for i in range(chart.GetNumberOfPlotSeriesNodes()):
                candidate = chart.GetNthPlotSeriesNode(i)
                if candidate is not None and candidate.GetName() == series_name:
                    series = candidate
            if series is None:
                series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", series_name)
                series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
                series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
                chart.AddAndObservePlotSeriesNodeID(series.GetID())
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(key)
        return chart

    def _tagged(self, class_name: str, name: str) -> Any:
        for i in range(self.scene.GetNumberOfNodesByClass(class_name)):
            node = self.scene.GetNthNodeByClass(i, class_name)
            if node is not None and node.GetAttribute(LOSS_PLOT_ATTRIBUTE) == name:
                return node
        return None

    @staticmethod
    def _tag(node: Any, name: str) -> Any:
        node.SetAttribute(LOSS_PLOT_ATTRIBUTE, name)
        return node
