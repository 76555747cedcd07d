"""The streaming record pass: one forward pass over a dataset, top-k/bottom-k exemplars for every unit
(``record``), or for several models in one pass over the data (``record_many``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.recording.folder import RecordResult
    from unitlens.recording.many import record_many
    from unitlens.recording.run import record
    from unitlens.recording.state import LayerState

__all__ = ["LayerState", "RecordResult", "record", "record_many"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RecordResult": "unitlens.recording.folder",
        "record": "unitlens.recording.run",
        "record_many": "unitlens.recording.many",
        "LayerState": "unitlens.recording.state",
    },
)
