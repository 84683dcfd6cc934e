"""Label schemes: what a segmentation network predicts and how its outputs become a label map.

Modelled on nnU-Net v2's ``LabelManager``: one object owns classes (softmax over background and one
channel per class) versus overlapping regions (one sigmoid per region, e.g. BraTS whole tumor / tumor
core / enhancing tumor), the output channels, the final activation, the label map painted back from
probabilities, the masks and the training target of a label map, names and colors, the built-in
schemes, and the checks of a scheme read from a file. Standard library only at import: numpy is
imported inside the functions that take arrays, and tensors are used through their own methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from . import fields
from .errors import BadInput

MODES = ("classes", "regions")
MAX_LABELS = 255  # labels or regions of one scheme: one output channel each
MAX_VALUE = 32767  # label maps are written as int16
PALETTE = ((0.9, 0.3, 0.2), (0.3, 0.75, 0.35), (0.95, 0.8, 0.25), (0.3, 0.5, 0.9), (0.8, 0.4, 0.85))
_KEYS = ("mode", "names", "values", "paint", "colors")
Array = Any  # a numpy array: numpy is imported inside the functions that use it


@dataclass(frozen=True)
class LabelScheme:
    """``classes`` (softmax over label values) or ``regions`` (sigmoid per region, each a set of label
    values). ``paint`` is the value a voxel of that label gets in the output label map (one of its
    values); an empty value set, for regions only, means "any non-zero label"."""

    mode: str = "classes"
    names: tuple[str, ...] = ("tumor",)
    values: tuple[tuple[int, ...], ...] = ((1,),)
    paint: tuple[int, ...] = (1,)
    colors: tuple[tuple[float, float, float], ...] = (PALETTE[0],)

    # -- construction and plain dicts ----------------------------------------------------------

    @classmethod
    def classes(cls, names: Sequence[str], values: Sequence[int], colors: Sequence[Sequence[float]] | None = None,
                where: object = "label scheme") -> "LabelScheme":
        """One class per name, painted with its own value; colors from a palette unless given."""
        colors = colors if colors is not None else [PALETTE[i % len(PALETTE)] for i in range(len(names))]
        return cls("classes", tuple(names), tuple((int(v),) for v in values), tuple(int(v) for v in values),
                   tuple(tuple(float(c) for c in color) for color in colors)).checked(where)

    @classmethod
    def auto(cls, found: Iterable[int], where: object) -> "LabelScheme":
        """One class per non-zero label value found, named ``label V``."""
        values = sorted({int(v) for v in found} - {0})
        fields.require(bool(values), where, "no label values found (all background)")
        return cls.classes([f"label {v}" for v in values], values, where=where)

    @classmethod
    def from_dict(cls, data: Any, where: object, name: str = "labels") -> "LabelScheme":
        """A scheme from ``{"mode", "names", "values", "paint", "colors"}`` (``--config``, dataset.json),
        every entry checked; ``mode`` defaults to classes, ``colors`` to a palette."""
        fields.mapping(data, where, name, _KEYS, required=("names", "values", "paint"))
        names = [fields.text(n, where, f"{name}.names[{i}]")
                 for i, n in enumerate(fields.array(data["names"], where, f"{name}.names", 1, MAX_LABELS))]
        values = [tuple(fields.integer(v, where, f"{name}.values[{i}][{j}]")
                        for j, v in enumerate(fields.array(group, where, f"{name}.values[{i}]", 0, MAX_VALUE)))
                  for i, group in enumerate(fields.array(data["values"], where, f"{name}.values", 1, MAX_LABELS))]
        paint = [fields.integer(v, where, f"{name}.paint[{i}]")
                 for i, v in enumerate(fields.array(data["paint"], where, f"{name}.paint", 1, MAX_LABELS))]
        colors = data.get("colors")
        colors = ([_color(c, where, f"{name}.colors[{i}]")
                   for i, c in enumerate(fields.array(colors, where, f"{name}.colors", 1, MAX_LABELS))]
                  if colors is not None else [PALETTE[i % len(PALETTE)] for i in range(len(names))])
        mode = fields.text(data.get("mode", "classes"), where, f"{name}.mode", MODES)
        return cls(mode, tuple(names), tuple(values), tuple(paint), tuple(colors)).checked(where)

    @classmethod
    def from_segments(cls, entries: Any, mode: Any, where: object) -> "LabelScheme":
        """A scheme from model.json's ``labels`` (``[{"name", "value", "color", "values"}]``, ``values``
        defaulting to ``[value]``) and ``label_mode`` (default classes)."""
        names, values, paint, colors = [], [], [], []
        for i, entry in enumerate(fields.array(entries, where, "labels", 1, MAX_LABELS)):
            at = f"labels[{i}]"
            fields.mapping(entry, where, at, ("name", "value", "color", "values"), required=("name", "value"))
            names.append(fields.text(entry["name"], where, f"{at}.name"))
            paint.append(fields.integer(entry["value"], where, f"{at}.value"))
            group = entry.get("values", [paint[-1]])
            values.append(tuple(fields.integer(v, where, f"{at}.values[{j}]")
                                for j, v in enumerate(fields.array(group, where, f"{at}.values", 0, MAX_VALUE))))
            colors.append(_color(entry["color"], where, f"{at}.color") if "color" in entry else PALETTE[i % len(PALETTE)])
        mode = fields.text(mode if mode is not None else "classes", where, "label_mode", MODES)
        return cls(mode, tuple(names), tuple(values), tuple(paint), tuple(colors)).checked(where)

    def to_dict(self) -> dict:
        """The plain form :meth:`from_dict` reads."""
        return {"mode": self.mode, "names": list(self.names), "values": [list(v) for v in self.values],
                "paint": list(self.paint), "colors": [list(c) for c in self.colors]}

    def segments(self) -> list[dict]:
        """One ``{"name", "value", "color"}`` per label: the segments of a ``.seg.nrrd`` and of Slicer."""
        return [{"name": n, "value": p, "color": list(c)} for n, p, c in zip(self.names, self.paint, self.colors)]

    def value_of(self) -> dict[str, int]:
        """Label name -> the value painted for it."""
        return dict(zip(self.names, self.paint))

    def checked(self, where: object) -> "LabelScheme":
        """This scheme, or ``BadInput(where, ...)`` saying what is inconsistent in it."""
        n = len(self.names)
        fields.require(self.mode in MODES, where, f"label mode {self.mode!r} is neither 'classes' nor 'regions'")
        fields.require(0 < n <= MAX_LABELS, where, f"a label scheme needs 1 to {MAX_LABELS} labels (got {n})")
        fields.require(len(self.values) == len(self.paint) == len(self.colors) == n, where,
                       "label names, values, paint and colors need one entry per label")
        fields.require(len(set(self.names)) == n, where, f"label names must differ (got {', '.join(self.names)})")
        for name, values, paint in zip(self.names, self.values, self.paint):
            fields.require(bool(values) or self.mode == "regions", where,
                           f"label {name!r}: a class needs its label values (an empty set, any non-zero label, is for regions)")
            fields.require(all(1 <= v <= MAX_VALUE for v in (*values, paint)), where,
                           f"label {name!r}: values must lie in 1..{MAX_VALUE} (0 is background; got {[*values, paint]})")
            fields.require(not values or paint in values, where,
                           f"label {name!r}: its painted value {paint} is not one of its values {list(values)}")
        fields.require(len(set(self.paint)) == n, where, f"each label needs its own painted value (got {list(self.paint)})")
        if self.mode == "classes":
            owner: dict[int, str] = {}
            for name, values in zip(self.names, self.values):
                for v in values:
                    fields.require(v not in owner, where, f"labels {owner.get(v)!r} and {name!r} share value {v}; "
                                                          "classes cannot overlap (overlapping labels are regions)")
                    owner[v] = name
        for color in self.colors:
            fields.require(len(color) == 3 and all(0.0 <= c <= 1.0 for c in color), where,
                           f"colors are three numbers in [0, 1] (got {list(color)})")
        return self

    # -- the network's outputs -------------------------------------------------------------------

    @property
    def outputs(self) -> int:
        """Output channels: background plus one per class, or one per region."""
        return len(self.names) + (1 if self.mode == "classes" else 0)

    def activate(self, logits: Any) -> Any:
        """Probabilities from (N, K, ...) logits: softmax over background and classes, or one sigmoid per region."""
        return logits.softmax(1) if self.mode == "classes" else logits.sigmoid()

    def to_label_map(self, probs: Any) -> Array:
        """(K, Z, Y, X) probabilities (array or CPU tensor) to an int16 label map of the paint values.
        Regions are painted from the least to the most specific (fewest values), so nested regions
        (whole tumor > core > enhancing) give back the most specific label."""
        import numpy as np

        probs = np.asarray(probs)
        if self.mode == "classes":
            return np.array([0, *self.paint], dtype=np.int16)[probs.argmax(0)]
        out = np.zeros(probs.shape[1:], dtype=np.int16)
        order = sorted(range(len(self.names)), key=lambda i: -len(self.values[i]) if self.values[i] else -math.inf)
        for channel in order:
            out[probs[channel] > 0.5] = self.paint[channel]
        return out

    # -- label maps ------------------------------------------------------------------------------

    def masks(self, label: Array) -> list[Array]:
        """One boolean mask per label or region (an empty value set: any non-zero label)."""
        import numpy as np

        return [label > 0 if not values else np.isin(label, values) for values in self.values]

    def training_target(self, label: Array) -> tuple[Array, Array]:
        """(target, foreground) of a label map: class indices (1, Z, Y, X) int64 with 0 for background,
        or one float32 mask per region (K, Z, Y, X); and the voxels of any label (1, Z, Y, X) uint8."""
        import numpy as np

        masks = np.stack(self.masks(label))
        if self.mode == "classes":  # classes are disjoint: at most one mask per voxel
            target = (masks * np.arange(1, len(masks) + 1)[:, None, None, None]).max(0)[None].astype(np.int64)
        else:
            target = masks.astype(np.float32)
        return target, masks.any(0)[None].astype(np.uint8)

    def check_values(self, label: Array, where: object) -> None:
        """``BadInput(where, ...)`` when the label map holds values this scheme does not know (they would
        silently count as background)."""
        import numpy as np

        if not all(self.values):  # a region of any non-zero label knows every value
            return
        known = set().union(*map(set, self.values))
        unknown = sorted(set(np.unique(label).tolist()) - known - {0})
        fields.require(not unknown, where, f"holds label value(s) {unknown[:20]} the label scheme does not know "
                                           f"(it knows {sorted(known)})")


def _color(value: Any, where: object, name: str) -> tuple[float, float, float]:
    channels = fields.array(value, where, name, 3, 3)
    return tuple(fields.number(c, where, f"{name}[{i}]", 0.0, 1.0) for i, c in enumerate(channels))  # type: ignore[return-value]


SCHEMES: dict[str, LabelScheme] = {
    "binary": LabelScheme("regions", ("tumor",), ((),), (1,), (PALETTE[0],)),
    "brats": LabelScheme(
        "regions",
        ("whole tumor", "tumor core", "enhancing tumor"),
        ((1, 2, 3, 4), (1, 3, 4), (4,)),
        (2, 1, 4),
        ((0.35, 0.75, 0.35), (0.9, 0.8, 0.3), (0.85, 0.25, 0.2)),
    ),
}


def builtin(name: str, where: object, also: Sequence[str] = ()) -> LabelScheme:
    """A built-in scheme by name; ``also``: other names the caller accepts (listed in the message)."""
    if name not in SCHEMES:
        raise BadInput(where, f"unknown scheme {name!r}; choose {', '.join((*also, *SCHEMES))}")
    return SCHEMES[name]
