"""The streaming record pass: one forward pass over a dataset, top-k/bottom-k exemplars for every unit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.record.run import RecordResult, record
    from unitlens.record.state import LayerState

__all__ = ["LayerState", "RecordResult", "record"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RecordResult": "unitlens.record.run",
        "record": "unitlens.record.run",
        "LayerState": "unitlens.record.state",
    },
)
