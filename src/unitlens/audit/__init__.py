"""Audit a class (paper 002, sections 3.4, 4.2, 4.3): do the units it relies on encode valid or spurious concepts
(``audit``), does its logit separate valid from spurious images (``audit_test``), and what does zeroing units do
(``prune_check``). CLI: ``unitlens audit ATLAS``, ``unitlens audit test``, ``unitlens audit prune``."""
from __future__ import annotations

from unitlens.audit.alignment import MIN_RELEVANCE, VERDICTS, AuditResult, audit, stored_audit, verdicts
from unitlens.audit.errors import AuditError
from unitlens.audit.model_test import audit_test
from unitlens.audit.prune import PruneResult, prune_check

__all__ = ["MIN_RELEVANCE", "VERDICTS", "AuditError", "AuditResult", "PruneResult", "audit", "audit_test",
           "prune_check", "stored_audit", "verdicts"]
