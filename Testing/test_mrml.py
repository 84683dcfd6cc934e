"""sarseg.mrml against Slicer's real MRML (the slicer-core wheel): exact geometry and label round trips."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for plain Python) is not installed")

from sarseg import io, mrml  # noqa: E402
from sarseg.core.errors import BadInput  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BRATS = DATA / "brats2015" / "pat0001"
TCGA = DATA / "tcga_gbm"
BRATS_LABELS = [
    {"value": 1, "name": "necrosis", "color": [0.5, 0.0, 0.0]},
    {"value": 2, "name": "edema", "color": [0.0, 0.8, 0.2]},
    {"value": 3, "name": "non-enhancing tumor", "color": [0.1, 0.2, 0.9]},
    {"value": 4, "name": "enhancing tumor", "color": [1.0, 1.0, 0.0]},
]
BRATS_VALUES = {e["name"]: e["value"] for e in BRATS_LABELS}


@pytest.fixture(scope="module")
def data() -> Path:
    if not (DATA / "README.md").is_file():
        pytest.skip(f"real scans not found at {DATA} (the shared data folder beside the checkout)")
    return DATA


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def load_like_slicer(scene, path: Path, labelmap: bool = False, right_handed: bool = True):
    """Read a file into a volume node the way Slicer's Add Data does (its archetype storage node)."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", path.stem)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetForceRightHandedIJKCoordinateSystem(right_handed)
    assert storage.ReadData(node) == 1, f"Slicer could not read {path}"
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


def flip_k(array: np.ndarray, geometry: io.Geometry) -> tuple[np.ndarray, io.Geometry]:
    """The same voxels with the slice order (K axis) reversed: what Slicer does to left-handed files."""
    d = np.asarray(geometry.direction).reshape(3, 3)
    last = np.asarray(geometry.origin) + d[:, 2] * geometry.spacing[2] * (geometry.size[2] - 1)
    d = d.copy()
    d[:, 2] *= -1
    return array[..., ::-1, :, :], io.Geometry(geometry.size, geometry.spacing, tuple(last), tuple(d.ravel()))


def assert_same_geometry(got: io.Geometry, expected: io.Geometry, tol: float = 1e-5) -> None:
    assert got.size == expected.size
    np.testing.assert_allclose(got.spacing, expected.spacing, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.origin, expected.origin, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.direction, expected.direction, atol=tol)


def oblique(tmp_path: Path, handed: int, suffix: str) -> Path:
    """A synthetic volume with a rotated (oblique) direction, anisotropic spacing, written by sarseg.io."""
    a, b = np.deg2rad(25.0), np.deg2rad(-40.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    direction = rz @ rx @ np.diag([1.0, 1.0, float(handed)])
    geometry = io.Geometry((23, 17, 11), (0.7, 1.3, 3.1), (-12.5, 40.25, 7.0), tuple(direction.ravel()))
    array = np.random.default_rng(3).normal(size=(11, 17, 23)).astype(np.float32)
    return io.write_image(tmp_path / f"oblique{handed:+d}{suffix}", array, geometry)


def cases(tmp_path: Path) -> dict[str, Path]:
    return {
        "tcga_nrrd": TCGA / "brain1_image.nrrd",
        "brats_flair_nifti": BRATS / "Flair_subtrMeanDivStd.nii.gz",
        "oblique_nifti": oblique(tmp_path, +1, ".nii.gz"),
        "oblique_left_handed_nrrd": oblique(tmp_path, -1, ".nrrd"),
    }


# ------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("case", ["tcga_nrrd", "brats_flair_nifti", "oblique_nifti", "oblique_left_handed_nrrd"])
def test_volume_node_matches_sar_io(data, scene, tmp_path, case):
    path = cases(tmp_path)[case]
    expected = io.read_image([path])

    # as stored in the file (Slicer's reader told to keep the file's handedness): identical
    node = load_like_slicer(scene, path, right_handed=False)
    got = mrml.image_from_volume_nodes([node], modalities=["mr"])
    assert got.array.dtype == np.float32 and got.array.shape == expected.array.shape
    np.testing.assert_array_equal(got.array, expected.array)
    assert_same_geometry(got.geometry, expected.geometry)
    assert got.modalities == ("mr",) and got.paths == (node.GetName(),)

    # as Slicer loads by default: a left-handed grid comes in with its slices reversed, same voxels in space
    node = load_like_slicer(scene, path)
    got = mrml.image_from_volume_nodes([node])
    left_handed = np.linalg.det(np.reshape(expected.geometry.direction, (3, 3))) < 0
    array, geometry = flip_k(expected.array, expected.geometry) if left_handed else (expected.array, expected.geometry)
    np.testing.assert_array_equal(got.array, array)
    assert_same_geometry(got.geometry, geometry)
    assert np.linalg.det(np.reshape(got.geometry.direction, (3, 3))) > 0


def test_add_volume_node_is_exact(data, scene, tmp_path):
    image = io.read_image([oblique(tmp_path, -1, ".nii.gz")])
    node = mrml.add_volume_node(scene, image, "probabilities")
    assert node.GetName() == "probabilities" and node.GetScene() is scene
    assert mrml.volume_to_geometry(node) == image.geometry  # exact: only sign flips
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), image.array[0])
    again = mrml.image_from_volume_nodes([node])
    np.testing.assert_array_equal(again.array, image.array)
    # an array plus its geometry, integer voxels kept
    label = (image.array[0] > 0).astype(np.int64)
    label_node = mrml.add_volume_node(scene, label, "mask", image.geometry, labelmap=True)
    assert label_node.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(label_node), label)
    with pytest.raises(ValueError):
        mrml.add_volume_node(scene, label[:-1], "short", image.geometry)


# ------------------------------------------------------------------------------------------ segmentations


def segments(node) -> list[tuple[str, str, tuple[float, ...]]]:
    s = node.GetSegmentation()
    return [(s.GetNthSegmentID(i), s.GetNthSegment(i).GetName(), tuple(s.GetNthSegment(i).GetColor()))
            for i in range(s.GetNumberOfSegments())]


def test_brats_labels_round_trip_and_replace(data, scene):
    image = io.read_image([BRATS / "Flair_subtrMeanDivStd.nii.gz"])
    label = io.read_label(BRATS / "OTMultiClass.nii.gz", reference=image.geometry)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}
    volume = mrml.add_volume_node(scene, image, "FLAIR")
    nodes_before = scene.GetNumberOfNodes()

    seg = mrml.labelmap_to_segmentation(scene, label, image.geometry, BRATS_LABELS, reference_volume=volume)
    assert seg.GetName() == "SAR segmentation"
    first = segments(seg)
    assert [name for _, name, _ in first] == [e["name"] for e in BRATS_LABELS]
    for (_, _, color), entry in zip(first, BRATS_LABELS):
        np.testing.assert_allclose(color, entry["color"])
    # only the segmentation and its display node are left in the scene: the temporary label map is gone
    assert scene.GetNumberOfNodes() - nodes_before <= 3
    assert not [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())
                if scene.GetNthNode(i).IsA("vtkMRMLLabelMapVolumeNode")]
    back = mrml.segmentation_to_labelmap(scene, seg, volume, BRATS_VALUES)
    assert back.dtype == np.int16 and back.shape == label.shape
    np.testing.assert_array_equal(back, label)

    # a second run (say class 3 vanished, edema grew) replaces the same-named segments, no duplicates;
    # a segment the user added by hand stays as it is
    manual = seg.GetSegmentation().AddEmptySegment("", "my notes", [1.0, 0.0, 1.0])
    second = label.copy()
    second[second == 3] = 2
    again = mrml.labelmap_to_segmentation(scene, second, image.geometry, BRATS_LABELS, volume, segmentation_node=seg)
    assert again is seg
    assert segments(seg) == first + [(manual, "my notes", (1.0, 0.0, 1.0))]
    with pytest.raises(BadInput, match="segment 'my notes'"):
        mrml.segmentation_to_labelmap(scene, seg, volume, BRATS_VALUES)
    seg.GetSegmentation().RemoveSegment(manual)
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg, volume, BRATS_VALUES), second)


def test_tcga_labels_round_trip_on_a_slicer_loaded_grid(data, scene):
    """The module's path: Slicer loads the scan (left-handed file, so K is flipped), the engine labels it."""
    volume = load_like_slicer(scene, TCGA / "brain1_image.nrrd")
    label_node = load_like_slicer(scene, TCGA / "brain1_label.nrrd", labelmap=True)
    geometry = mrml.volume_to_geometry(volume)
    assert geometry.same_grid(mrml.volume_to_geometry(label_node))
    label = slicer.util.arrayFromVolume(label_node).astype(np.int16)
    assert set(np.unique(label)) == {0, 1}
    labels = [{"value": 1, "name": "tumor", "color": [0.9, 0.3, 0.1]}]
    seg = mrml.labelmap_to_segmentation(scene, label, geometry, labels, reference_volume=volume, name="GBM")
    assert [(n, c) for _, n, c in segments(seg)] == [("tumor", (0.9, 0.3, 0.1))]
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg, volume, {"tumor": 1}), label)
    # also the file's own label, read by sarseg.io, matches once the slice order is taken into account
    on_file = io.read_label(TCGA / "brain1_label.nrrd")
    flipped, _ = flip_k(on_file, io.read_header(TCGA / "brain1_label.nrrd"))
    np.testing.assert_array_equal(label, flipped)
    # and a label map on the file's grid (as the engine reads it) lands on the Slicer-loaded grid exactly
    mrml.labelmap_to_segmentation(scene, on_file, io.read_header(TCGA / "brain1_label.nrrd"), labels, volume, seg)
    assert len(segments(seg)) == 1
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg, volume, {"tumor": 1}), label)


def test_values_follow_segment_names_not_order(data, scene):
    image = io.read_image([BRATS / "Flair_subtrMeanDivStd.nii.gz"])
    label = io.read_label(BRATS / "OTMultiClass.nii.gz")
    volume = mrml.add_volume_node(scene, image, "FLAIR")
    swapped = [BRATS_LABELS[i] for i in (3, 1, 0, 2)]  # created in another order than the values
    seg = mrml.labelmap_to_segmentation(scene, label, image.geometry, swapped, volume)
    assert [n for _, n, _ in segments(seg)] == [e["name"] for e in swapped]
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg, volume, BRATS_VALUES), label)
    # reorder the segments in the node (as a user dragging them in the list) and use other values
    s = seg.GetSegmentation()
    s.SetSegmentIndex(s.GetSegmentIdBySegmentName("necrosis"), 3)
    values = {"necrosis": 40, "edema": 10, "non-enhancing tumor": 30, "enhancing tumor": 20}
    expected = np.zeros_like(label)
    for name, value in values.items():
        expected[label == BRATS_VALUES[name]] = value
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg, volume, values), expected)


def test_empty_and_bad_label_entries(scene, tmp_path):
    image = io.read_image([oblique(tmp_path, 1, ".nii.gz")])
    volume = mrml.add_volume_node(scene, image, "x")
    label = np.zeros(image.array.shape[1:], np.int16)
    label[2:5, 3:9, 4:10] = 2
    labels = [{"value": 1, "name": "a", "color": [1, 0, 0]}, {"value": 2, "name": "b", "color": [0, 1, 0]}]
    seg = mrml.labelmap_to_segmentation(scene, label, image.geometry, labels, volume)
    assert [n for _, n, _ in segments(seg)] == ["a", "b"]  # "a" has no voxels: an empty segment all the same
    np.testing.assert_array_equal(mrml.segmentation_to_labelmap(scene, seg, volume, {"a": 1, "b": 2}), label)
    with pytest.raises(BadInput, match=r"values \[7\]"):
        mrml.labelmap_to_segmentation(scene, np.where(label > 0, 7, 0), image.geometry, labels, volume)
    with pytest.raises(BadInput, match="twice"):
        mrml.labelmap_to_segmentation(scene, label, image.geometry, labels + [labels[0]], volume)
    empty = mrml.labelmap_to_segmentation(scene, np.zeros_like(label), image.geometry, labels, volume, name="empty")
    with pytest.raises(BadInput, match="labels no voxel"):
        mrml.write_training_case(scene, [volume], empty, {"a": 1, "b": 2}, tmp_path / "set", "empty")
    with pytest.raises(BadInput, match="background"):
        mrml.labelmap_to_segmentation(scene, label, image.geometry, [{"value": 0, "name": "bg"}], volume)


# ------------------------------------------------------------------------------------------ training case


def test_write_training_case_round_trip(data, scene, tmp_path):
    volumes = [load_like_slicer(scene, TCGA / "brain1_image.nrrd")]
    label_node = load_like_slicer(scene, TCGA / "brain1_label.nrrd", labelmap=True)
    geometry = mrml.volume_to_geometry(volumes[0])
    label = slicer.util.arrayFromVolume(label_node).astype(np.int16)
    seg = mrml.labelmap_to_segmentation(scene, label, geometry, [{"value": 1, "name": "tumor", "color": [1, 0, 0]}],
                                        volumes[0])
    # a second channel on the same grid, made in the scene (e.g. a filtered copy)
    volumes.append(mrml.add_volume_node(scene, mrml.image_from_volume_nodes(volumes).array[0] * 0.5 + 3, "T1 half",
                                        geometry))
    entry = mrml.write_training_case(scene, volumes, seg, {"tumor": 1}, tmp_path / "set", "brain1", ["mr", "mr"])
    assert entry["images"] == [str(tmp_path / "set" / "imagesTr" / f"brain1_000{c}.nii.gz") for c in (0, 1)]
    assert entry["label"] == str(tmp_path / "set" / "labelsTr" / "brain1.nii.gz")
    written = io.read_image(entry["images"])
    expected = mrml.image_from_volume_nodes(volumes)
    np.testing.assert_array_equal(written.array, expected.array)
    assert_same_geometry(written.geometry, geometry)
    np.testing.assert_array_equal(io.read_label(entry["label"], reference=written.geometry), label)
    with pytest.raises(BadInput, match="exists already"):
        mrml.write_training_case(scene, volumes, seg, {"tumor": 1}, tmp_path / "set", "brain1")
    mrml.write_training_case(scene, volumes, seg, {"tumor": 1}, tmp_path / "set", "brain1", overwrite=True)
    with pytest.raises(BadInput, match="case id"):
        mrml.write_training_case(scene, volumes, seg, {"tumor": 1}, tmp_path / "set", "../escape")
    with pytest.raises(BadInput, match="segment 'tumor'"):
        mrml.write_training_case(scene, volumes, seg, {"edema": 2}, tmp_path / "set", "brain1b")


# ------------------------------------------------------------------------------------------- bad input


def test_channels_on_different_grids_raise(data, scene, tmp_path):
    flair = load_like_slicer(scene, BRATS / "Flair_subtrMeanDivStd.nii.gz")
    tcga = load_like_slicer(scene, TCGA / "brain1_image.nrrd")
    with pytest.raises(BadInput, match=r"volume 'brain1_image'.*different voxel grid"):
        mrml.image_from_volume_nodes([flair, tcga])
    # same size, shifted by half a voxel along x
    image = mrml.image_from_volume_nodes([tcga])
    g = image.geometry
    moved = io.Geometry(g.size, g.spacing, (g.origin[0] + 0.4,) + g.origin[1:], g.direction)
    shifted = mrml.add_volume_node(scene, image, "shifted", moved)
    with pytest.raises(BadInput, match="volume 'shifted'"):
        mrml.image_from_volume_nodes([tcga, shifted])
    with pytest.raises(BadInput, match="no volume"):
        mrml.image_from_volume_nodes([])
    # a volume under a (not hardened) transform is not where its voxel grid says
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shifted.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(BadInput, match="harden"):
        mrml.image_from_volume_nodes([shifted])


def test_only_mrml_imports_slicer():
    engine = Path(mrml.__file__).resolve().parent
    importing = sorted(p.name for p in engine.rglob("*.py")
                       if re.search(r"^\s*(import slicer|from slicer\b)", p.read_text(encoding="utf-8"), re.MULTILINE))
    assert importing == ["mrml.py"]
