"""The two ways a relevance step can fail: the model has no LRP support, or a result is missing or inconsistent."""
from __future__ import annotations


class RelevanceUnavailable(RuntimeError):
    """CRP/LRP relevance is not available for this architecture (e.g. attention / token models such as ViTs)."""


class RelevanceError(RuntimeError):
    """A relevance step cannot run or a stored relevance result is missing; the message names the fix."""
