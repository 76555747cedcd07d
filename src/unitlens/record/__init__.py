"""The streaming record pass: one forward pass over a dataset, top-k/bottom-k exemplars for every unit."""
from unitlens.record.run import RecordResult, record
from unitlens.record.state import LayerState

__all__ = ["LayerState", "RecordResult", "record"]
