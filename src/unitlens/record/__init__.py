"""The streaming record pass: one forward pass over a dataset, top-k/bottom-k exemplars for every unit
(``record``), or for several models in one pass over the data (``record_many``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.record.folder import RecordResult
    from unitlens.record.many import record_many
    from unitlens.record.run import record
    from unitlens.record.state import LayerState

__all__ = ["LayerState", "RecordResult", "record", "record_many"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RecordResult": "unitlens.record.folder",
        "record": "unitlens.record.run",
        "record_many": "unitlens.record.many",
        "LayerState": "unitlens.record.state",
    },
)
