"""Which units to visualise: ``"0-15,40"`` as a list of unit indices, checked against a layer's width."""
from __future__ import annotations

import re
from collections.abc import Sequence

from unitlens.errors import BadInput

_PART = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def parse_units(spec: str | Sequence[int] | None) -> list[int] | None:
    """``"0-15,40"`` -> [0, 1, ..., 15, 40] (sorted, no repeats); a list of ints as it is; None: every unit."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        values = list(spec)
        if not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in values):
            raise BadInput(f"units must be non-negative integers, got {values!r}")
        return sorted(set(values))
    units: set[int] = set()
    for part in spec.split(","):
        if not part.strip():
            continue
        m = _PART.fullmatch(part)
        if m is None:
            raise BadInput(f"units '{spec}': '{part.strip()}' is not a unit index or a range such as 0-15")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if hi < lo:
            raise BadInput(f"units '{spec}': the range {lo}-{hi} runs backwards; write {hi}-{lo}")
        units.update(range(lo, hi + 1))
    if not units:
        raise BadInput(f"units '{spec}' names no unit; give indices and ranges such as 0-15,40")
    return sorted(units)


def units_message(spec: str) -> str | None:
    """An option check: None when ``spec`` parses, else what is wrong."""
    try:
        parse_units(spec)
    except BadInput as err:
        return f"is not valid: {err}"
    return None


def choose_units(spec: str | Sequence[int] | None, width: int, layer: str) -> list[int]:
    """The units of ``spec`` in a layer of ``width`` units; one outside it is an error naming the layer's range."""
    units = parse_units(spec)
    if units is None:
        return list(range(width))
    outside = [u for u in units if u >= width]
    if outside:
        raise BadInput(f"unit {outside[0]} is outside layer {layer}, which has {width} units (0-{width - 1}); "
                       f"choose --units within that range")
    return units
