"""Audit a class (paper 002, sections 3.4, 4.2, 4.3): do the units it relies on encode valid or spurious concepts
(``audit``), does its logit separate valid from spurious images (``audit_test``), and what does zeroing units do
(``prune_check``). CLI: ``unitlens audit ATLAS``, ``unitlens audit test``, ``unitlens audit prune``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.audit.alignment import (
        VERDICTS,
        AuditResult,
        audit,
        audited_classes,
        stored_audit,
        verdicts,
    )
    from unitlens.audit.defaults import AUDIT_MIN_RELEVANCE
    from unitlens.audit.figures import plot_audit
    from unitlens.audit.logit_auc import AucResult, audit_test
    from unitlens.audit.prune import PruneResult, prune_check

__all__ = [
    "AUDIT_MIN_RELEVANCE",
    "AucResult",
    "AuditResult",
    "PruneResult",
    "VERDICTS",
    "audit",
    "audit_test",
    "audited_classes",
    "plot_audit",
    "prune_check",
    "stored_audit",
    "verdicts",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AUDIT_MIN_RELEVANCE": "unitlens.audit.defaults",
        "VERDICTS": "unitlens.audit.alignment",
        "AuditResult": "unitlens.audit.alignment",
        "audit": "unitlens.audit.alignment",
        "audited_classes": "unitlens.audit.alignment",
        "stored_audit": "unitlens.audit.alignment",
        "verdicts": "unitlens.audit.alignment",
        "plot_audit": "unitlens.audit.figures",
        "AucResult": "unitlens.audit.logit_auc",
        "audit_test": "unitlens.audit.logit_auc",
        "PruneResult": "unitlens.audit.prune",
        "prune_check": "unitlens.audit.prune",
    },
)
