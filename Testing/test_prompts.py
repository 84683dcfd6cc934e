"""Prompts (``sarseg.core.prompts``) and the worker's request lines and masks (``sarseg.core.worker``):
points from the command line, Slicer markups files as Slicer's own writer saves them (slicer-core) in
both coordinate systems, and hostile files and lines refused with a message, never a traceback."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from sarseg.core.errors import BadInput
from sarseg.core.prompts import MAX_POINTS, Prompts, parse_point, read_markups
from sarseg.core.worker import MAX_LINE_BYTES, BadRequest, decode_mask, encode_mask, parse_request, read_line, response
from test_fuzz_records import mutate


def markups(path: Path, *items: dict) -> Path:
    path.write_text(json.dumps({"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                                           "Markups/Resources/Schema/markups-schema-v1.0.4.json#", "markups": list(items)}))
    return path


def points(*positions, system: str = "LPS", **extra) -> dict:
    return {"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
            "controlPoints": [{"label": f"F-{i}", "position": list(p), "positionStatus": "defined"}
                              for i, p in enumerate(positions)], **extra}


# ------------------------------------------------------------------------------------ the command line


def test_parse_point() -> None:
    assert parse_point("1,-2.5,3e1", "--points") == (1.0, -2.5, 30.0)


@pytest.mark.parametrize("text", ["1,2", "1,2,3,4", "a,b,c", "1,2,nan", "1,2,inf", "1;2;3", "", "1e9,0,0"])
def test_bad_points_name_the_option(text: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_point(text, "--points")
    assert caught.value.what == "--points"


def test_prompts_add_up_with_one_box_at_most() -> None:
    a = Prompts(positive=((1.0, 2.0, 3.0),), box=(0.0, 0.0, 0.0, 1.0, 1.0, 1.0))
    b = Prompts(negative=((4.0, 5.0, 6.0),))
    assert a + b == Prompts(((1.0, 2.0, 3.0),), ((4.0, 5.0, 6.0),), (0.0, 0.0, 0.0, 1.0, 1.0, 1.0))
    assert not Prompts() and bool(b)
    with pytest.raises(BadInput, match="two boxes"):
        a + a
    with pytest.raises(BadInput, match=f"more than {MAX_POINTS} clicks"):
        Prompts(positive=((0.0, 0.0, 0.0),) * MAX_POINTS) + b


# ------------------------------------------------------------------------------------ markups files


def test_lps_and_ras_files_give_the_same_lps_points(tmp_path: Path) -> None:
    lps = read_markups(markups(tmp_path / "lps.mrk.json", points((10, -20, 30), (1.5, 2, 3))))
    ras = read_markups(markups(tmp_path / "ras.mrk.json", points((-10, 20, 30), (-1.5, -2, 3), system="RAS")))
    assert lps == ras == Prompts(positive=((10.0, -20.0, 30.0), (1.5, 2.0, 3.0)))
    assert read_markups(tmp_path / "ras.mrk.json", negative=True) == Prompts(negative=lps.positive)


def test_unplaced_points_are_skipped_and_lists_join(tmp_path: Path) -> None:
    unplaced = points((9, 9, 9))
    unplaced["controlPoints"][0].update(positionStatus="undefined", position=None)
    path = markups(tmp_path / "p.mrk.json", points((1, 2, 3)), unplaced, points((4, 5, 6), system="RAS"))
    assert read_markups(path).positive == ((1.0, 2.0, 3.0), (-4.0, -5.0, 6.0))


def test_a_rotated_ras_roi_is_its_lps_bounding_box(tmp_path: Path) -> None:
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)  # 30 degrees about z
    roi = {"type": "ROI", "coordinateSystem": "RAS", "center": [10.0, 20.0, 30.0], "size": [4.0, 2.0, 6.0],
           "orientation": [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]}
    box = read_markups(markups(tmp_path / "roi.mrk.json", roi)).box
    half_x, half_y = 2 * c + 1 * s, 2 * s + 1 * c  # half extents of the rotated 4 x 2 rectangle
    np.testing.assert_allclose(box, [-10 - half_x, -20 - half_y, 27, -10 + half_x, -20 + half_y, 33])


def test_files_written_by_slicer(tmp_path: Path) -> None:
    """Slicer's own markups writer (slicer-core), in LPS and in RAS, for a point list and a rotated ROI."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for plain Python) is not installed")
    import vtk

    scene = slicer.vtkMRMLScene()
    fiducials = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "clicks")
    fiducials.AddControlPoint(10.0, 20.0, 30.0)  # RAS, as Slicer holds them
    fiducials.AddControlPoint(-1.0, 2.5, -3.0)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetSize(10.0, 20.0, 30.0)
    rotation = vtk.vtkTransform()
    rotation.Translate(5.0, 6.0, 7.0)
    rotation.RotateZ(30.0)
    roi.SetAndObserveObjectToNodeMatrix(rotation.GetMatrix())
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)  # RAS: xmin, xmax, ymin, ymax, zmin, zmax
    expected_box = (-bounds[1], -bounds[3], bounds[4], -bounds[0], -bounds[2], bounds[5])
    for system in (0, 1):  # vtkMRMLStorageNode: 0 RAS, 1 LPS
        for node, storage_class, name in ((fiducials, slicer.vtkMRMLMarkupsJsonStorageNode, "points"),
                                          (roi, slicer.vtkMRMLMarkupsROIJsonStorageNode, "roi")):
            storage = scene.AddNode(storage_class())
            storage.SetCoordinateSystem(system)
            storage.SetFileName(str(tmp_path / f"{name}{system}.mrk.json"))
            assert storage.WriteData(node) == 1
        assert json.loads((tmp_path / f"points{system}.mrk.json").read_text())["markups"][0]["coordinateSystem"] == \
            ("RAS", "LPS")[system]
        assert read_markups(tmp_path / f"points{system}.mrk.json") == Prompts(positive=((-10.0, -20.0, 30.0), (1.0, -2.5, -3.0)))
        np.testing.assert_allclose(read_markups(tmp_path / f"roi{system}.mrk.json").box, expected_box, atol=1e-9)


@pytest.mark.parametrize("content, problem", [
    (b"\xff\xfe not utf-8", "malformed JSON"),
    (b"{", "malformed JSON"),
    (b"[" * 100000 + b"]" * 100000, "malformed JSON"),
    (b"[]", "not a JSON object"),
    (b"{}", "markups must be a JSON array"),
    (b'{"markups": []}', "needs 1 to"),
    (b'{"markups": [{"type": "Line", "controlPoints": []}]}', "prompts are point lists (Fiducial) and ROIs"),
    (b'{"markups": [{"type": "Fiducial", "coordinateSystem": "XYZ"}]}', "coordinateSystem"),
    (b'{"markups": [{"type": "Fiducial", "coordinateUnits": "um"}]}', "millimetres"),
    (b'{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1, 2]}]}]}', "needs 3 to 3 entries"),
    (b'{"markups": [{"type": "Fiducial", "controlPoints": [{"position": ["1", 2, 3]}]}]}', "finite number"),
    (b'{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1e999, 2, 3]}]}]}', "finite number"),
    (b'{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1' + b"0" * 400 + b', 2, 3]}]}]}', "finite number"),
    (b'{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1' + b"0" * 5000 + b', 2, 3]}]}]}', "malformed JSON"),
    (b'{"markups": [{"type": "Fiducial", "controlPoints": []}]}', "holds no placed point and no ROI"),
    (b'{"markups": [{"type": "ROI", "center": [0, 0, 0], "size": [1, -1, 1]}]}', "must not be negative"),
    (b'{"markups": [{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1], "insideOut": true}]}', "inside-out"),
    (b'{"markups": [{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1]}, '
     b'{"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1]}]}', "two boxes"),
])
def test_bad_markups_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.mrk.json"
    path.write_bytes(content)
    with pytest.raises(BadInput) as caught:
        read_markups(path)
    assert caught.value.what == str(path) and problem in caught.value.problem, caught.value


def test_too_many_points_and_a_negative_roi(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=f"more than {MAX_POINTS} clicks"):
        read_markups(markups(tmp_path / "many.mrk.json", points(*[(i, 0, 0) for i in range(200)]),
                             points(*[(i, 1, 0) for i in range(200)])))
    roi = {"type": "ROI", "center": [0, 0, 0], "size": [1, 1, 1]}
    with pytest.raises(BadInput, match="a box is a positive prompt"):
        read_markups(markups(tmp_path / "roi.mrk.json", roi), negative=True)
    with pytest.raises(BadInput, match="no such markups file"):
        read_markups(tmp_path / "missing.mrk.json")


def test_fuzzed_markups_files_read_or_are_refused(tmp_path: Path) -> None:
    valid = {"markups": [points((1, 2, 3), (4, 5, 6), system="RAS"),
                         {"type": "ROI", "coordinateSystem": "LPS", "center": [1, 2, 3], "size": [4, 5, 6],
                          "orientation": [1, 0, 0, 0, 1, 0, 0, 0, 1]}]}
    rng = random.Random(5)
    path = tmp_path / "fuzz.mrk.json"
    for trial in range(400):
        path.write_text(json.dumps(mutate(valid, rng)))
        try:
            prompts = read_markups(path)
        except BadInput as exc:
            assert exc.what == str(path) and exc.problem, (trial, exc)
        else:
            assert prompts and all(len(p) == 3 for p in (*prompts.positive, *prompts.negative)), trial


# ------------------------------------------------------------------------------------ worker lines


def test_requests_parse() -> None:
    load = parse_request(b'{"id": 1, "op": "load", "images": ["a.nii.gz"]}')
    assert (load.id, load.op, load.images) == (1, "load", ("a.nii.gz",))
    segment = parse_request(json.dumps({"id": "s", "op": "segment", "points": [[1, 2, 3]], "negative": [[4, 5, 6]],
                                        "box": [0, 0, 0, 9, 9, 9]}).encode())
    assert segment.prompts == Prompts(((1.0, 2.0, 3.0),), ((4.0, 5.0, 6.0),), (0.0, 0.0, 0.0, 9.0, 9.0, 9.0))
    assert parse_request(b'{"op": "segment", "box": [0, 0, 0, 1, 1, 1]}').prompts.box is not None
    assert parse_request(b'{"op": "shutdown"}\n').op == "shutdown"


@pytest.mark.parametrize("line, request_id, problem", [
    (b"not json", None, "not a JSON line"),
    (b"[1, 2]", None, "a request is a JSON object"),
    (b'{"id": true, "op": "load"}', None, "id must be"),
    (b'{"id": 3, "op": "dance"}', 3, "op is 'dance'"),
    (b'{"id": 3}', 3, "op must be"),
    (b'{"id": "a", "op": "load"}', "a", "has no 'images'"),
    (b'{"id": "a", "op": "load", "images": []}', "a", "needs 1 to"),
    (b'{"id": "a", "op": "load", "images": [1]}', "a", "images[0]"),
    (b'{"id": 4, "op": "segment", "points": [[1, 2, 3]], "colour": 1}', 4, "unknown field"),
    (b'{"id": 4, "op": "segment", "negative": [[1, 2, 3]]}', 4, "at least one positive point or a box"),
    (b'{"id": 4, "op": "segment", "points": [[1, 2]]}', 4, "points[0]"),
    (b'{"id": 4, "op": "segment", "box": [0, 0, 0, -1, 1, 1]}', 4, "x0 <= x1"),
])
def test_bad_requests_keep_their_id(line: bytes, request_id, problem: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(line)
    assert caught.value.id == request_id and problem in str(caught.value), caught.value


def test_long_lines_are_cut_and_the_next_line_reads_whole(tmp_path: Path) -> None:
    path = tmp_path / "lines"
    path.write_bytes(b"x" * (3 * MAX_LINE_BYTES) + b"\n" + b'{"op": "shutdown"}\n')
    with open(path, "rb") as stream:
        with pytest.raises(BadRequest, match="longer than"):
            parse_request(read_line(stream))
        assert parse_request(read_line(stream)).op == "shutdown"
        assert read_line(stream) is None


def test_responses_and_masks_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((5, 6, 7)) > 0.7  # z, y, x
    line = response(7, "segment", start=[1, 2, 3], size=[7, 6, 5], mask=encode_mask(mask))
    data = json.loads(line)
    assert data["ok"] and data["id"] == 7 and line.endswith(b"\n") and line.count(b"\n") == 1
    np.testing.assert_array_equal(decode_mask(data["mask"], data["size"]), mask)
    assert json.loads(response(None, error="bad")) == {"id": None, "ok": False, "error": "bad"}
    with pytest.raises(BadInput, match="expected"):
        decode_mask(data["mask"], [7, 6, 4])
    with pytest.raises(BadInput, match="not base64"):
        decode_mask("%%%", [1, 1, 1])
    bomb = encode_mask(np.zeros((512, 512, 512), dtype=bool))  # a small text that inflates to 16 MB
    with pytest.raises(BadInput, match="expected"):
        decode_mask(bomb, [8, 8, 8])
