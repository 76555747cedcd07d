"""``AuditError``: an audit step cannot run (no relevant unit, unknown class folders, no stored audit, ...)."""
from __future__ import annotations


class AuditError(RuntimeError):
    """An audit step cannot run; the message names the problem and the fix."""
