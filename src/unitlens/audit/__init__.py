"""Audit a class (the SemanticLens paper, sections 3.4, 4.2, 4.3): do the units it relies on encode valid or
spurious concepts (``audit_class``), does its logit separate valid from spurious images (``audit_test``), and what
does ablating units do (``prune_check``). CLI: ``unitlens audit ATLAS``, ``unitlens audit test``, ``unitlens audit
prune``.

::

    result = audit_class(atlas, "envelope", "valid.txt", "spurious.txt")   # stored in <atlas>/audit/
    plot_audit(result)                                                      # a matplotlib Figure
    audit_test(model, "envelope", "office/", "flags/").auc
    prune_check(model, audited_units(atlas, 549), "envelope", labelled="labelled/", spurious="flags/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.audit.alignment import (
        VERDICTS,
        AuditResult,
        audit_class,
        audited_classes,
        audited_units,
        stored_audit,
        verdicts,
    )
    from unitlens.audit.figures import plot_audit, plot_flagged_units
    from unitlens.audit.logit_auc import AucResult, audit_test
    from unitlens.audit.options import AuditOptions, AuditTestOptions, PruneOptions
    from unitlens.audit.prune import PruneResult, prune_check

__all__ = [
    "AucResult",
    "AuditOptions",
    "AuditResult",
    "AuditTestOptions",
    "PruneOptions",
    "PruneResult",
    "VERDICTS",
    "audit_class",
    "audit_test",
    "audited_classes",
    "audited_units",
    "plot_audit",
    "plot_flagged_units",
    "prune_check",
    "stored_audit",
    "verdicts",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "VERDICTS": "unitlens.audit.alignment",
        "AuditResult": "unitlens.audit.alignment",
        "audit_class": "unitlens.audit.alignment",
        "audited_classes": "unitlens.audit.alignment",
        "audited_units": "unitlens.audit.alignment",
        "stored_audit": "unitlens.audit.alignment",
        "verdicts": "unitlens.audit.alignment",
        "plot_audit": "unitlens.audit.figures",
        "plot_flagged_units": "unitlens.audit.figures",
        "AucResult": "unitlens.audit.logit_auc",
        "audit_test": "unitlens.audit.logit_auc",
        "AuditOptions": "unitlens.audit.options",
        "AuditTestOptions": "unitlens.audit.options",
        "PruneOptions": "unitlens.audit.options",
        "PruneResult": "unitlens.audit.prune",
        "prune_check": "unitlens.audit.prune",
    },
)
