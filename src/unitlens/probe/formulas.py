"""Labels as formulas over probe concepts: a plain concept, or INVERT's left-deep compositions such as
``(a OR b) AND NOT c``.

A formula is a list of terms ``(op, concept, negated)``, the first with op ``""``, each further one combining the
formula so far with one (possibly negated) concept by ``AND`` or ``OR``. Tables store it as JSON beside its
rendered text, so the held-out evaluation never parses text.
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
