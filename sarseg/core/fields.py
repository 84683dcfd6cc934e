"""Typed reading of JSON fields: every wrong type, range or key is one ``BadInput(where, problem)`` that
names the field, so a file anyone can edit (a model card, a label scheme) is refused before it is used.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .errors import BadInput


def show(value: Any, limit: int = 60) -> str:
    """A short ``repr`` for messages (a hostile file may hold a megabyte where a number belongs)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require(ok: bool, where: object, problem: str) -> None:
    if not ok:
        raise BadInput(where, problem)


def mapping(value: Any, where: object, name: str, allowed: Sequence[str] | None = None,
            required: Sequence[str] = ()) -> dict:
    """A JSON object holding only ``allowed`` keys (any, when None) and all ``required`` ones."""
    require(isinstance(value, dict), where, f"{name} must be a JSON object (got {show(value)})")
    unknown = sorted(str(k) for k in value if allowed is not None and k not in allowed)
    require(not unknown, where, f"{name} has unknown field(s) {', '.join(map(show, unknown))}; known: {', '.join(allowed or ())}")
    missing = [k for k in required if k not in value]
    require(not missing, where, f"{name} has no {', '.join(map(repr, missing))}")
    return value


def array(value: Any, where: object, name: str, low: int = 0, high: int = 1 << 20) -> list:
    """A JSON array of ``low`` to ``high`` entries."""
    require(isinstance(value, list), where, f"{name} must be a JSON array (got {show(value)})")
    require(low <= len(value) <= high, where, f"{name} needs {low} to {high} entries (got {len(value)})")
    return value


def integer(value: Any, where: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a boolean, not 2.0) in ``low..high``."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    bounds = "" if low is None and high is None else f" from {low} to {high}" if high is not None else f" of at least {low}"
    require(ok, where, f"{name} must be an integer{bounds} (got {show(value)})")
    return value


def number(value: Any, where: object, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number in ``[low, high]``."""
    try:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high
    except OverflowError:  # an integer of hundreds of digits has no float
        ok = False
    bounds = "" if math.isinf(low) and math.isinf(high) else f" in [{low}, {high}]"
    require(ok, where, f"{name} must be a finite number{bounds} (got {show(value)})")
    return float(value)


def boolean(value: Any, where: object, name: str) -> bool:
    require(isinstance(value, bool), where, f"{name} must be true or false (got {show(value)})")
    return value


def text(value: Any, where: object, name: str, choices: Sequence[str] = (), max_len: int = 200) -> str:
    """A non-empty string of at most ``max_len`` characters, one of ``choices`` when given."""
    ok = isinstance(value, str) and 0 < len(value) <= max_len
    require(ok, where, f"{name} must be a non-empty string of at most {max_len} characters (got {show(value)})")
    require(not choices or value in choices, where, f"{name} is {show(value)}; choose {', '.join(choices)}")
    return value
