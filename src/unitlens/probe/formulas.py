"""Labels as formulas over probe concepts: a plain concept, or INVERT's left-deep compositions such as
``(a OR b) AND NOT c``.

A formula is a list of terms ``(op, concept, negated)``, the first with op ``""``, each further one combining the
formula so far with one (possibly negated) concept by ``AND`` or ``OR``. Tables store it as JSON beside its
rendered text, so the held-out evaluation never parses text.

Formulas are written in one canonical order (``canonical``): AND and OR are commutative, so the operands of each
run of one operator are sorted by concept name (``a OR b``, never ``b OR a``; the first run includes the first
concept), and one selectivity always reads as one label.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from unitlens.errors import BadInput

Term = tuple[str, str, bool]
OPS = ("AND", "OR")


def render(terms: Sequence[Term]) -> str:
    """``[("", "a", False), ("AND", "b", True)]`` -> ``"a AND NOT b"``; mixed operators get parentheses."""
    text, last = "", ""
    for i, (op, concept, negated) in enumerate(terms):
        atom = f"NOT {concept}" if negated else concept
        if i == 0:
            text = atom
        else:
            text = f"({text}) {op} {atom}" if i > 1 and op != last else f"{text} {op} {atom}"
            last = op
    return text


def canonical(terms: Sequence[Term]) -> list[Term]:
    """``terms`` with the operands of each run of one operator sorted by (concept, negated): the same indicator,
    written one way. ``b OR a`` -> ``a OR b``; ``(d AND c) OR b OR a`` -> ``(c AND d) OR a OR b``."""
    terms = list(terms)
    out: list[Term] = []
    i = 0
    while i < len(terms):
        op = terms[i + 1][0] if i == 0 and len(terms) > 1 else terms[i][0]
        j = i + 1
        while j < len(terms) and terms[j][0] == op:
            j += 1
        run = sorted(terms[i:j], key=lambda t: (t[1], t[2]))
        out += [("" if i == 0 and k == 0 else op, concept, negated) for k, (_, concept, negated) in enumerate(run)]
        i = j
    return out


def to_json(terms: Sequence[Term]) -> str:
    return json.dumps([list(t) for t in terms])


def from_json(text: str) -> list[Term]:
    return [(str(op), str(c), bool(n)) for op, c, n in json.loads(text)] if text else []


def single(concept: str) -> list[Term]:
    return [("", concept, False)]


def indicator(terms: Sequence[Term], membership: np.ndarray, concepts: Sequence[str]) -> np.ndarray:
    """(n,) bool: where the formula holds, given images x concepts ``membership``."""
    index = {c: k for k, c in enumerate(concepts)}
    out = None
    for op, concept, negated in terms:
        if concept not in index:
            raise BadInput(f"concept '{concept}' is not one of the probe set's concepts ({', '.join(concepts)})")
        col = membership[:, index[concept]].astype(bool)
        col = ~col if negated else col
        if out is None:
            out = col
        elif op == "AND":
            out = out & col
        elif op == "OR":
            out = out | col
        else:
            raise BadInput(f"formula operator must be AND or OR, got '{op}'")
    if out is None:
        raise BadInput("an empty formula holds nowhere; label 'none' has no indicator")
    return out
