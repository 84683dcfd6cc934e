"""Prompts for a promptable (interactive) model: positive and negative clicks and a box, in the image's
physical space (LPS millimetres, as ITK reads the file), from the command line, a Slicer markups file
or a worker request.

Slicer markups JSON (``.mrk.json``): point lists (``Fiducial``) and ``ROI``s, each in its
``coordinateSystem`` (``LPS``, the default, or ``RAS``: x and y negated) and in millimetres. Slicer
saves one node per file and not its name, so a file's points are positive or negative as the caller
reads it (``--prompts`` or ``--negative-prompts``); points whose ``positionStatus`` is ``undefined``
(placed nowhere yet) are skipped. An ROI is the box: its axis-aligned bounds in LPS, however it is
rotated (its ``orientation``). A markups file is anyone's to edit: its size, its markups and points, and every field read are bounded
and checked (``BadInput`` naming the file and the field). Standard library only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import fields
from .errors import BadInput

Point = tuple[float, float, float]  # x, y, z: LPS mm
Box = tuple[float, float, float, float, float, float]  # x0, y0, z0, x1, y1, z1: LPS mm, as --roi
MAX_POINTS = 256  # clicks of one prompt set, positive and negative together
MAX_MARKUPS = 64
MAX_MARKUPS_BYTES = 16 << 20
MAX_COORDINATE = 1e6  # mm: a kilometre from the origin is no patient


@dataclass(frozen=True)
class Prompts:
    """Clicks inside (positive) and outside (negative) the lesion, and a box around it, LPS mm."""

    positive: tuple[Point, ...] = ()
    negative: tuple[Point, ...] = ()
    box: Box | None = None

    def __bool__(self) -> bool:
        return bool(self.positive or self.negative or self.box is not None)

    def __add__(self, other: "Prompts") -> "Prompts":
        """Both sets' clicks; at most one of them may give a box."""
        if self.box is not None and other.box is not None:
            raise BadInput("prompts", "two boxes given; a prompt has at most one box")
        joined = Prompts(self.positive + other.positive, self.negative + other.negative,
                         self.box if self.box is not None else other.box)
        fields.require(len(joined.positive) + len(joined.negative) <= MAX_POINTS, "prompts",
                       f"more than {MAX_POINTS} clicks given")
        return joined

    @classmethod
    def from_request(cls, data: dict, where: object) -> "Prompts":
        """``points``, ``negative`` (arrays of [x, y, z]) and ``box`` ([x0, y0, z0, x1, y1, z1] or null)
        of a worker request, every value checked."""
        positive = _points(data.get("points", []), where, "points")
        negative = _points(data.get("negative", []), where, "negative")
        box = data.get("box")
        box = None if box is None else _box([_coordinate(v, where, f"box[{i}]")
                                             for i, v in enumerate(fields.array(box, where, "box", 6, 6))], where)
        return cls(positive, negative, box) + cls()  # the sum checks the number of clicks in all

    def to_request(self) -> dict:
        """The fields :meth:`from_request` reads."""
        return {"points": [list(p) for p in self.positive], "negative": [list(p) for p in self.negative],
                "box": None if self.box is None else list(self.box)}


def parse_point(text: str, where: object) -> Point:
    """``"X,Y,Z"`` (LPS mm) from the command line."""
    parts = str(text).split(",")
    fields.require(len(parts) == 3, where, f"{fields.show(text)} is not a point X,Y,Z (three numbers, LPS mm)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise BadInput(where, f"{fields.show(text)} is not a point X,Y,Z (three numbers, LPS mm)") from None
    return tuple(_coordinate(v, where, f"point {text}") for v in values)  # type: ignore[return-value]


def show_point(point: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in point) + ")"


def read_markups(path: str | Path, negative: bool = False) -> Prompts:
    """The clicks and box of a Slicer markups file (point lists and at most one ROI); with ``negative``
    its points are negative clicks and it holds no ROI."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(path, "no such markups file")
    size = path.stat().st_size
    fields.require(size <= MAX_MARKUPS_BYTES, path, f"is {size} bytes; a markups file of prompts holds at most {MAX_MARKUPS_BYTES}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of thousands of digits
        raise BadInput(path, f"malformed JSON ({exc})") from None
    except RecursionError:
        raise BadInput(path, "malformed JSON (nested too deeply)") from None
    fields.require(isinstance(data, dict), path, "is not a JSON object (a Slicer markups file holds {\"markups\": [...]})")
    markups = fields.array(data.get("markups"), path, "markups", 1, MAX_MARKUPS)
    prompts = Prompts()
    for i, markup in enumerate(markups):
        try:
            prompts = prompts + _markup(markup, path, f"markups[{i}]", negative)
        except BadInput as exc:
            raise BadInput(path, exc.problem) from None
    fields.require(bool(prompts), path, "holds no placed point and no ROI")
    return prompts


def _markup(markup: Any, where: object, at: str, negative: bool) -> Prompts:
    fields.mapping(markup, where, at, required=("type",))
    kind = fields.text(markup["type"], where, f"{at}.type", max_len=64)
    fields.require(kind in ("Fiducial", "ROI"), where,
                   f"{at}.type is {fields.show(kind)}: prompts are point lists (Fiducial) and ROIs")
    ras = fields.text(markup.get("coordinateSystem", "LPS"), where, f"{at}.coordinateSystem", ("LPS", "RAS")) == "RAS"
    units = markup.get("coordinateUnits", "mm")
    unit = units[0] if isinstance(units, list) and units else units
    fields.require(unit == "mm", where, f"{at}.coordinateUnits is {fields.show(units)}; prompts are in millimetres (mm)")

    def lps(point: Sequence[float]) -> Point:
        return (-point[0], -point[1], point[2]) if ras else (point[0], point[1], point[2])

    if kind == "ROI":
        fields.require(not negative, where, f"{at} is an ROI: a box is a positive prompt (give it with --prompts)")
        fields.require(markup.get("insideOut", False) is False, where, f"{at}: an inside-out ROI is no box around a lesion")
        center = _vector(markup.get("center"), where, f"{at}.center", 3)
        size = _vector(markup.get("size"), where, f"{at}.size", 3)
        fields.require(all(s >= 0 for s in size), where, f"{at}.size must not be negative (got {list(size)})")
        axes = _vector(markup.get("orientation", [1, 0, 0, 0, 1, 0, 0, 0, 1]), where, f"{at}.orientation", 9)
        corners = [lps([center[r] + sum(sign[c] * size[c] / 2 * axes[3 * r + c] for c in range(3)) for r in range(3)])
                   for sign in ((a, b, c) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1))]
        low = [min(p[k] for p in corners) for k in range(3)]
        high = [max(p[k] for p in corners) for k in range(3)]
        return Prompts(box=_box([*low, *high], where))
    points = []
    for j, point in enumerate(fields.array(markup.get("controlPoints", []), where, f"{at}.controlPoints", 0, MAX_POINTS)):
        fields.mapping(point, where, f"{at}.controlPoints[{j}]")
        if point.get("positionStatus") == "undefined":
            continue
        points.append(lps(_vector(point.get("position"), where, f"{at}.controlPoints[{j}].position", 3)))
    return Prompts(negative=tuple(points)) if negative else Prompts(positive=tuple(points))


def _coordinate(value: Any, where: object, name: str) -> float:
    return fields.number(value, where, name, -MAX_COORDINATE, MAX_COORDINATE)


def _vector(value: Any, where: object, name: str, n: int) -> list[float]:
    return [_coordinate(v, where, f"{name}[{i}]") for i, v in enumerate(fields.array(value, where, name, n, n))]


def _points(value: Any, where: object, name: str) -> tuple[Point, ...]:
    return tuple(tuple(_vector(p, where, f"{name}[{i}]", 3))  # type: ignore[misc]
                 for i, p in enumerate(fields.array(value, where, name, 0, MAX_POINTS)))


def _box(values: Iterable[float], where: object) -> Box:
    box = tuple(values)
    fields.require(all(box[k] <= box[k + 3] for k in range(3)) and all(map(math.isfinite, box)), where,
                   f"box {list(box)} needs x0 <= x1, y0 <= y1 and z0 <= z1")
    return box  # type: ignore[return-value]
