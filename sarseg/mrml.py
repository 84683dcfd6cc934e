"""Between Slicer's MRML scene and the engine: volume nodes to :class:`Image`, label maps to segmentations.

This is the only module of the engine that imports ``slicer``. It runs inside 3D Slicer and in plain
Python with the ``slicer-core`` wheel, which has no application, no ``slicer.mrmlScene`` global and no
Qt: every function therefore takes the scene explicitly.

Geometry: a volume node maps voxel (i, j, k) to RAS through its IJK-to-RAS matrix; the engine uses
SimpleITK's LPS convention. The conversion is exact: LPS = diag(-1, -1, 1) RAS, so the signs of the
first two components of the origin and of the first two rows of the direction matrix flip, and the
spacing is the node's. Voxel arrays are (K, J, I) = (Z, Y, X) as in SimpleITK.

Note: Slicer's volume reader (``vtkMRMLVolumeArchetypeStorageNode``) by default forces a right-handed
IJK system: a file whose direction matrix has a negative determinant is loaded with its slice order
(K axis) reversed. The node still covers the same voxels at the same physical places, so everything
written back here onto the node's grid is correct; only its array and geometry differ from the file's
by that flip.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import slicer
import vtk

from .core.errors import BadInput
from .io import Geometry, Image, PathLike, check_intensities, write_image

_LPS = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS, its own inverse
_TEMP = "SAR temporary labelmap"


def _name(node: Any) -> str:
    return f"volume '{node.GetName()}'" if node is not None else "volume"


def _check_volume(node: Any) -> None:
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        kind = node.GetClassName() if node is not None else "nothing"
        raise BadInput(_name(node), f"is a {kind}; a scalar volume is needed")
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise BadInput(_name(node), "holds no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise BadInput(_name(node), f"has {image.GetNumberOfScalarComponents()} components per voxel; one is needed")
    if node.GetParentTransformNode() is not None:
        raise BadInput(
            _name(node),
            f"is under transform '{node.GetParentTransformNode().GetName()}'; harden the transform "
            "(Data module: right-click, Harden transform) so its voxel grid is where it is shown",
        )


def volume_to_geometry(node: Any) -> Geometry:
    """The voxel grid of a scalar volume node in SimpleITK's LPS convention (exact sign flips of IJK-to-RAS)."""
    _check_volume(node)
    image = node.GetImageData()
    dims = image.GetDimensions()
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    ras = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    spacing = np.array(node.GetSpacing(), dtype=float)
    origin = np.array(node.GetOrigin(), dtype=float)
    extent = image.GetExtent()
    start = np.array(extent[0::2], dtype=float)
    if start.any():  # voxel (0, 0, 0) of the array lies at the extent's start, not at IJK (0, 0, 0)
        origin = origin + ras @ (spacing * start)
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise BadInput(_name(node), f"has zero, negative or invalid voxel spacing {tuple(spacing)}")
    return Geometry(
        tuple(int(d) for d in dims),
        tuple(float(s) for s in spacing),
        tuple(float(o) + 0.0 for o in origin * _LPS),  # + 0.0: no negative zeros
        tuple(float(d) + 0.0 for d in (ras * _LPS[:, None]).ravel()),
    )


def _set_geometry(node: Any, geometry: Geometry) -> None:
    """Put ``geometry`` (LPS) on a volume node as its IJK-to-RAS."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3) * _LPS[:, None]
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(direction[r, c]))
    node.SetIJKToRASDirectionMatrix(matrix)
    node.SetSpacing(*(float(s) for s in geometry.spacing))
    node.SetOrigin(*(float(o) for o in np.asarray(geometry.origin, dtype=float) * _LPS))


def image_from_volume_nodes(nodes: Sequence[Any], modalities: Sequence[str] = ()) -> Image:
    """The volume nodes as the channels of one float32 :class:`Image` (C, Z, Y, X) on their common grid.

    Every channel must lie on the first one's grid (no resampling here); the array is a copy, so the
    nodes can change afterwards. ``Image.paths`` holds the node names.
    """
    nodes = list(nodes)
    if not nodes:
        raise BadInput("volumes", "no volume selected")
    if modalities and len(modalities) != len(nodes):
        raise BadInput("modalities", f"{len(modalities)} names given for {len(nodes)} volumes")
    geometry = volume_to_geometry(nodes[0])
    arrays = []
    for node in nodes:
        this = volume_to_geometry(node)
        if not this.same_grid(geometry):
            raise BadInput(
                _name(node),
                f"is on a different voxel grid than {_name(nodes[0])} (size {this.size} vs {geometry.size}, "
                f"spacing {_fmt(this.spacing)} vs {_fmt(geometry.spacing)}, origin {_fmt(this.origin)} vs "
                f"{_fmt(geometry.origin)}); resample it onto that volume first (Resample Scalar/Vector/DWI Volume)",
            )
        array = slicer.util.arrayFromVolume(node).astype(np.float32)  # astype copies
        check_intensities(_name(node), array)
        arrays.append(array)
    return Image(np.stack(arrays), geometry, tuple(node.GetName() for node in nodes), tuple(modalities))


def add_volume_node(
    scene: Any,
    data: Image | np.ndarray,
    name: str = "",
    geometry: Geometry | None = None,
    *,
    channel: int = 0,
    labelmap: bool = False,
) -> Any:
    """A new scalar (or label map) volume node holding an :class:`Image` channel or a (Z, Y, X) array.

    The node gets the exact grid (``geometry``, or the image's); voxel values are copied.
    """
    if isinstance(data, Image):
        array = data.array[channel]
        geometry = geometry or data.geometry
    else:
        array = np.asarray(data)
    if geometry is None:
        raise ValueError("a plain array needs its geometry")
    if array.ndim != 3 or tuple(array.shape[::-1]) != tuple(geometry.size):
        raise ValueError(f"array shape {array.shape} does not match grid size {geometry.size} (x, y, z)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype.itemsize == 8 and np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.int32)  # VTK volumes of 64-bit integers are not displayed correctly
    node = _new_volume(scene, name, labelmap)
    _set_geometry(node, geometry)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    return node


def _new_volume(scene: Any, name: str, labelmap: bool) -> Any:
    return scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)


def _remove_temporary(scene: Any, node: Any, before: set[str]) -> None:
    """Remove a temporary volume node and the display, storage and color nodes made for it."""
    helpers = []
    for i in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(i)
        if display is not None:
            helpers.append(display)
            color = display.GetColorNode() if hasattr(display, "GetColorNode") else None
            if color is not None and color.GetID() not in before:
                helpers.append(color)
    for i in range(node.GetNumberOfStorageNodes()):
        if node.GetNthStorageNode(i) is not None:
            helpers.append(node.GetNthStorageNode(i))
    scene.RemoveNode(node)
    for helper in helpers:
        if helper.GetScene() is scene:
            scene.RemoveNode(helper)


def _node_ids(scene: Any) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _ensure_converter_rules() -> None:
    """Register the binary labelmap <-> closed surface rules where nobody has (plain slicer-core).

    Inside the Slicer application the Segmentations module has registered them; without them a
    segmentation cannot even hold an empty binary labelmap segment.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if factory.ConstructRepresentationObjectByRepresentation(binary) is None:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _check_labels(labels: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, tuple[float, float, float] | None]]:
    entries, names, values = [], set(), set()
    for i, entry in enumerate(labels):
        try:
            value, name = entry["value"], entry["name"]
        except (KeyError, TypeError):
            raise BadInput("labels", f"entry {i} ({entry!r}) needs 'value' and 'name'") from None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 32767:
            raise BadInput("labels", f"entry {i} ({name!r}): value {value!r} must be an integer in 1..32767 "
                                     "(0 is background)")
        if not isinstance(name, str) or not name.strip():
            raise BadInput("labels", f"entry {i} (value {value}): the name must be a non-empty string")
        if name in names or int(value) in values:
            raise BadInput("labels", f"entry {i}: name {name!r} or value {value} appears twice")
        color = entry.get("color")
        if color is not None:
            color = tuple(float(c) for c in color)
            if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
                raise BadInput("labels", f"entry {i} ({name!r}): color {entry['color']!r} must be three numbers "
                                         "in 0..1")
        names.add(name)
        values.add(int(value))
        entries.append((int(value), name, color))
    return entries


def labelmap_to_segmentation(
    scene: Any,
    label: np.ndarray,
    geometry: Geometry,
    labels: Sequence[Mapping[str, Any]],
    reference_volume: Any = None,
    segmentation_node: Any = None,
    name: str = "SAR segmentation",
) -> Any:
    """Show a label map (Z, Y, X, integer) on ``geometry`` as segments of a segmentation node.

    Every entry of ``labels`` ({"value", "name", "color" [r, g, b] in 0..1}) becomes one segment, also
    when it has no voxels (an empty segment), so each class is always there to edit and a rerun leaves
    no stale content. With ``segmentation_node`` the segments that have an entry's name are replaced in
    place (same segment ID, position and the first of any duplicates; the others removed); its other
    segments are left alone. Values in the label map that no entry lists raise ``BadInput``.
    The reference geometry (the grid the segment editor works on) is the reference volume's when given,
    else the label map's for a new node.
    """
    label = np.asarray(label)
    if label.ndim != 3 or tuple(label.shape[::-1]) != tuple(geometry.size):
        raise BadInput("label map", f"shape {label.shape} does not match grid size {geometry.size} (x, y, z)")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        if not np.isfinite(label).all() or not np.array_equal(label, np.round(label)):
            raise BadInput("label map", "holds non-integer values")
    entries = _check_labels(labels)
    present = np.unique(label).astype(np.int64)
    if present.size and present[0] < 0:
        raise BadInput("label map", f"holds negative values ({int(present[0])})")
    unknown = sorted(set(present.tolist()) - {0} - {value for value, _, _ in entries})
    if unknown:
        raise BadInput("label map", f"holds values {unknown} that the label list does not name")

    # the import fills segment i of the ID list from value i + 1: renumber the entries 1..n
    lut = np.zeros(int(present[-1]) + 1 if present.size else 1, dtype=np.int16)
    for index, (value, _, _) in enumerate(entries):
        if value < lut.size:
            lut[value] = index + 1
    compact = lut[label.astype(np.int64, copy=False)]

    _ensure_converter_rules()
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation_node.CreateDefaultDisplayNodes()
        new = True
    else:
        if not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise BadInput(f"node '{segmentation_node.GetName()}'", "is not a segmentation")
        new = False
    segmentation = segmentation_node.GetSegmentation()

    ids = vtk.vtkStringArray()
    for _, segment_name, color in entries:
        same = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
                if segmentation.GetNthSegment(i).GetName() == segment_name]
        for extra in same[1:]:
            segmentation.RemoveSegment(extra)
        if same:
            segment_id = same[0]
            if color is not None:
                segmentation.GetSegment(segment_id).SetColor(*color)
        else:
            if color is None:
                segment_id = segmentation.AddEmptySegment("", segment_name)
            else:
                segment_id = segmentation.AddEmptySegment("", segment_name, list(color))
            if not segment_id:
                raise RuntimeError(f"Slicer could not add segment {segment_name!r}")
        ids.InsertNextValue(segment_id)

    before = _node_ids(scene)
    temporary = _new_volume(scene, _TEMP, labelmap=True)
    try:
        _set_geometry(temporary, geometry)
        slicer.util.updateVolumeFromArray(temporary, np.ascontiguousarray(compact))
        if reference_volume is not None:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        elif new:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(temporary)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        ok = logic.ImportLabelmapToSegmentationNode(temporary, segmentation_node, ids)
    finally:
        _remove_temporary(scene, temporary, before)
    if not ok:
        raise RuntimeError(f"Slicer could not import the label map into segmentation '{segmentation_node.GetName()}'")
    return segmentation_node


def set_segment_crop(
    segmentation_node: Any,
    name: str,
    reference_volume: Any,
    start_xyz: Sequence[int],
    mask: np.ndarray | None,
    color: Sequence[float] | None = None,
) -> str:
    """Make segment ``name`` (added, with ``color``, when missing) hold exactly ``mask``: a (Z, Y, X) boolean
    crop of the reference volume's grid starting at voxel ``start_xyz`` (None: an empty segment). Only the
    crop is handed over (Slicer's ``SetBinaryLabelmapToSegment`` in replace mode, which also clears the
    segment outside it), so a small answer on a large volume costs little. Returns the segment ID."""
    from vtk.util import numpy_support

    _check_volume(reference_volume)
    _ensure_converter_rules()
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(name)
    if not segment_id:
        segment_id = segmentation.AddEmptySegment("", name, *([list(color)] if color is not None else []))
    if mask is None or not np.asarray(mask).size:
        start_xyz, mask = (0, 0, 0), np.zeros((1, 1, 1), dtype=bool)
    mask = np.asarray(mask, dtype=np.uint8)
    (x, y, z), (sz, sy, sx) = start_xyz, mask.shape
    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.SetExtent(x, x + sx - 1, y, y + sy - 1, z, z + sz - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.ravel()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE):
        raise RuntimeError(f"Slicer could not write segment {name!r} of '{segmentation_node.GetName()}'")
    return segment_id


def segmentation_to_labelmap(
    scene: Any,
    segmentation_node: Any,
    reference_volume: Any,
    name_to_value: Mapping[str, int],
) -> np.ndarray:
    """The segments as an int16 label map (Z, Y, X) on the reference volume's grid, valued by segment name.

    Every segment's name must be in ``name_to_value`` (else ``BadInput`` naming the segment); voxels of
    no segment are 0. Where segments overlap, the later segment in the node wins.
    """
    _check_volume(reference_volume)
    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise BadInput("segmentation", "no segmentation node given")
    for segment_name, value in name_to_value.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 32767:
            raise BadInput("label values", f"{segment_name!r}: value {value!r} must be an integer in 1..32767")
    segmentation = segmentation_node.GetSegmentation()
    ids = vtk.vtkStringArray()
    lut = [0]  # the export numbers the segments 1..n in the order of the ID list
    for i in range(segmentation.GetNumberOfSegments()):
        segment_name = segmentation.GetNthSegment(i).GetName()
        if segment_name not in name_to_value:
            raise BadInput(
                f"segment '{segment_name}'",
                f"of segmentation '{segmentation_node.GetName()}' has no label value (known: "
                f"{', '.join(sorted(name_to_value)) or 'none'}); rename or delete it",
            )
        ids.InsertNextValue(segmentation.GetNthSegmentID(i))
        lut.append(int(name_to_value[segment_name]))
    reference = volume_to_geometry(reference_volume)
    shape = tuple(reference.size[::-1])
    if ids.GetNumberOfValues() == 0:
        return np.zeros(shape, dtype=np.int16)

    _ensure_converter_rules()
    before = _node_ids(scene)
    temporary = _new_volume(scene, _TEMP, labelmap=True)
    try:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, temporary, reference_volume)
        if not ok or temporary.GetImageData() is None:
            raise RuntimeError(f"Slicer could not export segmentation '{segmentation_node.GetName()}' to a label map")
        exported = volume_to_geometry(temporary)
        if not exported.same_grid(reference):
            raise RuntimeError(
                f"Slicer exported segmentation '{segmentation_node.GetName()}' on grid {exported} instead of the "
                f"reference volume's {reference}")
        array = slicer.util.arrayFromVolume(temporary)
        if array.size and (array.min() < 0 or array.max() >= len(lut)):
            raise RuntimeError(f"Slicer's export holds values outside 0..{len(lut) - 1}")
        return np.asarray(lut, dtype=np.int16)[array]
    finally:
        _remove_temporary(scene, temporary, before)


_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def write_training_case(
    scene: Any,
    volume_nodes: Sequence[Any],
    segmentation_node: Any,
    name_to_value: Mapping[str, int],
    folder: PathLike,
    case_id: str,
    modalities: Sequence[str] = (),
    overwrite: bool = False,
) -> dict:
    """Write one labeled case in the nnU-Net v2 layout on the volumes' exact grid.

    Channel ``c`` goes to ``folder/imagesTr/{case_id}_{c:04d}.nii.gz`` (its voxel type kept) and the
    label map (segments valued by name) to ``folder/labelsTr/{case_id}.nii.gz`` (int16), written last so
    a case with a label file is complete. Returns the case's entry: id, image and label paths, label
    values, size and spacing.
    """
    if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
        raise BadInput("case id", f"{case_id!r} must start with a letter or digit and hold only letters, digits, "
                                  "'_', '.' and '-'")
    image = image_from_volume_nodes(volume_nodes, modalities)  # checks the grids and the intensities
    label = segmentation_to_labelmap(scene, segmentation_node, volume_nodes[0], name_to_value)
    if not label.any():
        raise BadInput(f"segmentation '{segmentation_node.GetName()}'",
                       f"labels no voxel inside {_name(volume_nodes[0])}")
    folder = Path(folder)
    images = [folder / "imagesTr" / f"{case_id}_{c:04d}.nii.gz" for c in range(len(volume_nodes))]
    label_path = folder / "labelsTr" / f"{case_id}.nii.gz"
    if not overwrite:
        existing = [p for p in (*images, label_path) if p.exists()]
        if existing:
            raise BadInput(existing[0], f"case {case_id!r} exists already; choose another id or allow overwriting")
    for node, path in zip(volume_nodes, images):
        write_image(path, np.array(slicer.util.arrayFromVolume(node)), image.geometry)
    write_image(label_path, label, image.geometry)
    return {
        "case_id": case_id,
        "images": [str(p) for p in images],
        "label": str(label_path),
        "modalities": list(image.modalities),
        "labels": {str(k): int(v) for k, v in name_to_value.items()},
        "size": list(image.geometry.size),
        "spacing": list(image.geometry.spacing),
    }


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
