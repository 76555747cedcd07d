"""The ``invert`` labeller: the concept, or compositional formula of at most ``length`` concepts joined by AND / OR
with NOT on concepts, whose indicator best separates a unit's activations by AUC over the labelled probe images
(Bykov et al., "Labeling Neural Representations with Inverse Recognition", NeurIPS 2023).

The search is the paper's beam search: atoms are the concepts and their negations; the beam starts with each
unit's ``beam`` best atoms; each step extends every beam formula f by every atom a to ``f AND a`` and
``f OR a``, and keeps the ``beam`` best formulas of the old beam and the new ones. Only formulas whose share of
the images lies in [min_fraction, max_fraction] (and that hold for at least ``min_support`` images) count, as in
the reference; formulas with the same indicator on the images are one formula (the first in the order below).
Order: higher AUC, then fewer concepts, then the order of generation (old beam, then beam slot, atom, AND
before OR), so the result is deterministic; a beam wide enough to keep every formula is an exhaustive search.

Batched over all units of a layer: with ranks R (U, n), atoms A (n, J) and each unit's beam indicators
F (U, B, n), the rank sums of every ``f AND a`` are one batched product (R ⊙ F) @ A, those of ``f OR a`` follow
as Σf + Σa − Σ(f AND a); counts and an exact integer hash of each indicator come the same way. No loop over
units or images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unitlens.errors import BadInput
from unitlens.probe import formulas
from unitlens.probe.concept_sources import probe_columns
from unitlens.probe.defaults import BEAM, LENGTH, MAX_FRACTION, MIN_FRACTION, MIN_SUPPORT
from unitlens.probe.labellers import LABELLERS, LabelContext, Labeller, layer_frame, varying
from unitlens.probe.ranking import row_ranks

AND, OR = 1, 2
CHUNK = 2**22  # units x beam x images per batched product


@dataclass
class SearchResult:
    """Per unit: AUC of the best formula, whether one was found, its atoms (J index, -1 pad) and operators."""

    auc: np.ndarray  # (U,)
    found: np.ndarray  # (U,) bool
    atoms: np.ndarray  # (U, L) int: atom j < K is concept j, j >= K is NOT concept j - K
    ops: np.ndarray  # (U, L) int: 0 first, 1 AND, 2 OR


def _hash_weights(n: int) -> np.ndarray:
    """Integer weights whose sums over any subset of n images stay exact in float64 (a collision-free hash in
    practice: 2**-bits per pair of distinct indicators)."""
    bits = max(8, 52 - math.ceil(math.log2(n + 1)))
    return np.random.default_rng(20231113).integers(1, 2**bits, n).astype(np.float64)


def _select(auc: np.ndarray, length: np.ndarray, hashes: np.ndarray, valid: np.ndarray, width: int):
    """Per row, the indices of the ``width`` best distinct valid entries (order of the module doc) and a mask."""
    U, P = auc.shape
    position = np.broadcast_to(np.arange(P), (U, P))
    key = np.where(valid & np.isfinite(auc), -auc, np.inf)
    order = np.lexsort((position, length, key), axis=-1)  # (U, P) best first
    h = np.take_along_axis(hashes, order, 1)
    ok = np.take_along_axis(valid & np.isfinite(auc), order, 1)
    by_hash = np.argsort(np.where(ok, h, np.inf), axis=1, kind="stable")  # equal hashes together, best first
    hs = np.take_along_axis(h, by_hash, 1)
    dup_sorted = np.zeros_like(ok)
    dup_sorted[:, 1:] = hs[:, 1:] == hs[:, :-1]
    dup = np.empty_like(ok)
    np.put_along_axis(dup, by_hash, dup_sorted, 1)
    kept = ok & ~dup
    first = np.argsort(~kept, axis=1, kind="stable")[:, :width]  # kept entries, in priority order
    return np.take_along_axis(order, first, 1), np.take_along_axis(kept, first, 1)


def beam_search(ranks: np.ndarray, atoms: np.ndarray, length: int = LENGTH, beam: int = BEAM, min_count: int = 1,
                max_count: int | None = None) -> SearchResult:
    """The best formula of at most ``length`` atoms for every unit (rows of ``ranks`` (U, n), average ranks of
    its activations) over boolean ``atoms`` (n, J), counting only formulas true on ``min_count``..``max_count``
    images."""
    if length < 1 or beam < 1:
        raise BadInput("INVERT needs a formula length and a beam width of at least 1")
    U, n = ranks.shape
    max_count = n - 1 if max_count is None else min(max_count, n - 1)
    min_count = max(1, min_count)
    A = atoms.astype(np.float64)
    J = A.shape[1]
    w = _hash_weights(n)
    S_a, c_a, h_a = ranks @ A, A.sum(0), w @ A

    def auc(S, c):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (S - c * (c + 1) / 2) / (c * (n - c))

    def allowed(c):
        return (c >= min_count) & (c <= max_count)

    # length 1: the atoms
    a_auc = auc(S_a, c_a)
    sel, keep = _select(a_auc, np.ones((U, J)), np.broadcast_to(h_a, (U, J)), np.broadcast_to(allowed(c_a), (U, J)),
                        beam)
    F = A.T[sel] * keep[..., None]  # (U, B, n) beam indicators
    state = {"auc": np.take_along_axis(a_auc, sel, 1), "S": np.take_along_axis(S_a, sel, 1), "c": c_a[sel],
             "h": h_a[sel], "len": np.ones(sel.shape), "valid": keep}
    T_atom = np.full((U, sel.shape[1], length), -1, dtype=np.int64)
    T_op = np.zeros((U, sel.shape[1], length), dtype=np.int64)
    T_atom[:, :, 0] = sel
    for _ in range(1, length):
        Bk = F.shape[1]
        S_and, c_and, h_and = (np.empty((U, Bk, J)) for _ in range(3))
        per = max(1, CHUNK // max(1, Bk * n))
        for s in range(0, U, per):
            f = F[s:s + per]
            u = f.shape[0]
            stacked = np.concatenate([f * ranks[s:s + per, None, :], f, f * w]).reshape(-1, n)  # one 2-D product
            S_and[s:s + per], c_and[s:s + per], h_and[s:s + per] = (stacked @ A).reshape(3, u, Bk, J)
        S_or = state["S"][..., None] + S_a[:, None, :] - S_and
        c_or = state["c"][..., None] + c_a - c_and
        h_or = state["h"][..., None] + h_a - h_and
        S_new = np.stack([S_and, S_or], -1).reshape(U, -1)  # (U, Bk * J * 2): slot, atom, op
        c_new = np.stack([c_and, c_or], -1).reshape(U, -1)
        h_new = np.stack([h_and, h_or], -1).reshape(U, -1)
        parent_ok = np.repeat(state["valid"], J * 2, axis=1)
        pool_auc = np.concatenate([state["auc"], auc(S_new, c_new)], 1)
        pool_len = np.concatenate([state["len"], np.repeat(state["len"] + 1, J * 2, axis=1)], 1)
        pool_h = np.concatenate([state["h"], h_new], 1)
        pool_ok = np.concatenate([state["valid"], parent_ok & allowed(c_new)], 1)
        pool_S = np.concatenate([state["S"], S_new], 1)
        pool_c = np.concatenate([state["c"], c_new], 1)
        sel, keep = _select(pool_auc, pool_len, pool_h, pool_ok, beam)
        old = sel < Bk
        slot, rest = np.divmod(np.where(old, 0, sel - Bk), J * 2)
        parent = np.where(old, sel, slot)
        atom, op = np.divmod(rest, 2)
        parent_F = np.take_along_axis(F, parent[..., None], 1)
        col = A.T[atom]  # (U, B, n)
        new_F = np.where((op == 0)[..., None], parent_F * col, np.maximum(parent_F, col))
        F = np.where(old[..., None], parent_F, new_F) * keep[..., None]
        T_atom = np.take_along_axis(T_atom, parent[..., None], 1)
        T_op = np.take_along_axis(T_op, parent[..., None], 1)
        grow = ~old & keep
        u_idx, b_idx = np.nonzero(grow)
        pos = state["len"][u_idx, parent[u_idx, b_idx]].astype(np.int64)
        T_atom[u_idx, b_idx, pos] = atom[u_idx, b_idx]
        T_op[u_idx, b_idx, pos] = np.where(op[u_idx, b_idx] == 0, AND, OR)
        state = {"auc": np.take_along_axis(pool_auc, sel, 1), "S": np.take_along_axis(pool_S, sel, 1),
                 "c": np.take_along_axis(pool_c, sel, 1), "h": np.take_along_axis(pool_h, sel, 1),
                 "len": np.take_along_axis(pool_len, sel, 1), "valid": keep}
    return SearchResult(state["auc"][:, 0], state["valid"][:, 0], T_atom[:, 0], T_op[:, 0])


def terms_of(atoms: np.ndarray, ops: np.ndarray, concepts: list[str]) -> list[formulas.Term]:
    """One unit's formula (atom and op rows of a ``SearchResult``) as formula terms, in canonical order."""
    K = len(concepts)
    out = []
    for j, op in zip(atoms.tolist(), ops.tolist()):
        if j < 0:
            break
        out.append(({0: "", AND: "AND", OR: "OR"}[op], concepts[j % K], j >= K))
    return formulas.canonical(out)


class Invert(Labeller):
    """Best formula by AUC over the visible probe images; score that AUC."""

    name, score_name, settings = "invert", "auc", ("length", "beam", "min_support")

    def __init__(self, length: int = LENGTH, beam: int = BEAM, min_fraction: float = MIN_FRACTION,
                 max_fraction: float = MAX_FRACTION, min_support: int = MIN_SUPPORT):
        if not 0 <= min_fraction <= max_fraction <= 1:
            raise BadInput("INVERT needs 0 <= min_fraction <= max_fraction <= 1")
        self.length, self.beam = length, beam
        self.min_fraction, self.max_fraction, self.min_support = min_fraction, max_fraction, min_support

    def label(self, ctx: LabelContext, layers: list[str]) -> pd.DataFrame:
        concepts = probe_columns(ctx)
        index = [ctx.store.concepts.index(c) for c in concepts]
        member = ctx.membership[:, index]
        atoms = np.concatenate([member, ~member], 1)
        n = len(ctx.rows)
        min_count = max(self.min_support, math.ceil(self.min_fraction * n))
        max_count = math.floor(self.max_fraction * n)
        frames = []
        for layer in layers:
            acts = ctx.activations(layer)
            units = varying(acts).numpy()
            labels, scores, terms_list = [], [], []
            if len(units):
                found = beam_search(row_ranks(acts[units]), atoms, self.length, self.beam, min_count, max_count)
                keep = found.found
                for i in np.flatnonzero(keep):
                    terms = terms_of(found.atoms[i], found.ops[i], concepts)
                    terms_list.append(terms)
                    labels.append(formulas.render(terms))
                units, scores = units[keep], found.auc[keep]
            frame = layer_frame(layer, ctx.n_units(layer), units, labels, scores)
            frame.loc[units, "formula"] = [formulas.to_json(t) for t in terms_list]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


LABELLERS.register("invert", Invert)
