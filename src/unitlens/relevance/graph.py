"""``attribution_graph(atlas, cls, layers)``: how the labelled unit groups of two layers feed each other in the
model's decision for one class (SemanticLens paper, supplementary D.5), written as JSON;
``relevance.figures.plot_attribution_graph`` draws it.

1. Relevance filter: units whose highest relevance share for the class (``rel_max`` of the stored class
   relevance) is ≥ ``min_relevance`` (1 %) take part; the others are left out.
2. Groups: the units of each layer grouped by their stored labels (``unitlens lens label``; the atlas's label store,
   SemanticLens labels first); units labelled none (or without a label) form one group "?" — concepts nobody
   listed, as the paper marks them.
3. Nodes: a group's relevance is the sum of its units' mean shares (mean over the class samples of R_k / Σ|R_j|).
4. Edges: for each upper group G_b and sample x, CRP conditions ``{upper: G_b, "y": [class]}`` give the relevance
   that reaches the lower layer through G_b only; the edge G_b → G_a is the mean over samples of the part that
   lands on G_a's units, as a share of the lower layer's total |relevance| for the class. By linearity of LRP the
   edges into G_a from all upper units add up to G_a's relevance (minus what bypasses the upper layer through
   skip connections), so edges and nodes share one scale.

The samples are those of the stored class relevance (same data and sample rule).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from unitlens import notebook
from unitlens.atlas.labels import LabelStore, set_name
from unitlens.errors import BadInput, RelevanceError, RelevanceNotComputed
from unitlens.options import takes_options
from unitlens.relevance.options import GraphOptions
from unitlens.runtime import Progress

UNLABELLED = "?"


@dataclass
class GraphResult:
    """An attribution graph: its nodes (unit groups), edges, settings and the JSON file it was written to."""

    nodes: pd.DataFrame  # id, layer, label, units (list), relevance
    edges: pd.DataFrame  # source (upper node id), target (lower node id), weight
    meta: dict  # class, layers, samples, the options, seconds
    json_path: Path  # its JSON file

    def as_dict(self) -> dict:
        """The graph as plain values (its JSON file)."""
        return {**self.meta, "nodes": self.nodes.to_dict("records"), "edges": self.edges.to_dict("records")}

    def _repr_html_(self) -> str:
        m = self.meta
        facts = {"layers": f"{m['lower']} -> {m['upper']}", "samples": f"{m['n_samples']} ({m['samples']})",
                 "groups": len(self.nodes), "written": self.json_path}
        strongest = self.edges.sort_values("weight", ascending=False)
        return (notebook.header(f"attribution graph of class {m['class_index']} ({m['class_name']})", facts)
                + notebook.table(self.nodes.assign(units=[len(u) for u in self.nodes["units"]]), "groups")
                + notebook.table(strongest, "edges, strongest first"))


def _groups(rel: pd.DataFrame, labels: pd.DataFrame, layer: str, min_relevance: float) -> dict[str, list[int]]:
    rows = rel[(rel["layer"] == layer) & (rel["rel_max"] >= min_relevance)]
    lab = labels[labels["layer"] == layer]
    by_unit = dict(zip(lab["unit"].astype(int), lab["label"].astype(str)))
    groups: dict[str, list[int]] = {}
    for u in sorted(rows["unit"].astype(int)):
        name = by_unit.get(u, "none")
        groups.setdefault(UNLABELLED if name == "none" else name, []).append(u)
    return groups


def _labels(atlas, backend, layers: list[str]) -> pd.DataFrame:
    """The stored labels of one label set that covers both layers (SemanticLens first; ``backend``: its backend)."""
    table = LabelStore(atlas).pick(layers, backend=backend)
    if table is None or not set(layers) <= set(table["layer"]):
        raise RelevanceNotComputed(
            f"the attribution graph groups units by their labels, and atlas {atlas.path} has "
            f"none for {', '.join(layers)}: run unitlens lens embed {atlas.path} --layers "
            f"{','.join(layers)}, then unitlens lens label {atlas.path} --concepts ...")
    return table


@takes_options(GraphOptions)
def attribution_graph(atlas, cls, layers, options: GraphOptions | None = None, *, backend=None,
                      labels: pd.DataFrame | None = None, model=None, out=None, progress: bool = True) -> GraphResult:
    """The attribution graph of one class between the labelled unit groups of two layers, written as JSON.

    Parameters
    ----------
    atlas
        An atlas with the class's relevance (``class_relevance``) on both layers.
    cls
        The class: its index, or the name of a class with stored relevance.
    layers
        The two layers, ``"lower,upper"`` or a pair (their order is taken from the atlas).
    options
        A ``GraphOptions``; any of its fields may also be given as a keyword argument (see below).
    backend
        The embedding backend whose stored labels group the units (when the atlas has several label sets).
    labels
        A table (layer, unit, label) that groups the units instead of the atlas's stored labels.
    model
        The analysed ``LoadedModel`` (default: loaded from the atlas's manifest, its weights checked).
    out
        The JSON file to write (default: ``<atlas>/relevance/graph_<class>_<lower>__<upper>.json``).
    progress
        Show progress bars.

    Returns
    -------
    GraphResult
        The nodes (unit groups and their relevance), the edges (the share of the lower layer's relevance that
        flows through each upper group into each lower group), the settings, and ``json_path``. Draw it with
        ``plot_attribution_graph``.
    """
    options = options or GraphOptions()
    from unitlens.atlas.atlas import Atlas
    from unitlens.data.loading import load_batches
    from unitlens.relevance.attribute import (
        Attribution,
        group_relevance,
        target_relevance,
    )
    from unitlens.relevance.explain_class import select_samples
    from unitlens.relevance.session import open_session, top_predictions
    from unitlens.relevance.store import folder, load_meta, load_relevance

    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    with atlas.writing("graph"):
        names = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else list(layers)
        if len(names) != 2 or names[0] == names[1]:
            raise BadInput(f"give two different layers (lower,upper), got {layers!r}")
        depth = {info.name: info.depth for info in atlas.select_layers(names)}
        lower, upper = sorted(names, key=lambda n: depth[n])
        rel = load_relevance(atlas, cls)
        index, name = int(rel["class_index"].iloc[0]), str(rel["class_name"].iloc[0])
        missing = [n for n in (lower, upper) if n not in set(rel["layer"])]
        if missing:
            raise RelevanceNotComputed(
                f"the stored relevance of class {index} ({name}) has no layer {', '.join(missing)}; run "
                f"unitlens relevance {atlas.path} --class {index} --layers {lower},{upper}")
        given = labels is not None
        labels = labels if labels is not None else _labels(atlas, backend, [lower, upper])
        up_groups = _groups(rel, labels, upper, options.min_relevance)
        low_groups = _groups(rel, labels, lower, options.min_relevance)
        if not up_groups or not low_groups:
            raise RelevanceError(f"no unit of {upper if not up_groups else lower} has a relevance share of at least "
                                 f"{options.min_relevance:g} for class {name}; lower --min-relevance")
        meta = load_meta(atlas, f"class_{index}")
        data = None if meta.get("dataset_fingerprint") == atlas.manifest.dataset.fingerprint else meta.get("data")
        session = open_session(atlas, layers=[lower, upper], data=data, device=options.device, model=model,
                               channels_last=options.channels_last)
        ids = select_samples(top_predictions(session, progress=progress), index, meta.get("samples", "top5"))
        attribution = Attribution(session.loaded.model, device=session.device)
        group_units = list(up_groups.values())
        edge_sum = torch.zeros(len(up_groups), len(low_groups), dtype=torch.float64)
        low_units = int(rel[rel["layer"] == lower]["unit"].max()) + 1
        members = torch.zeros(low_units, len(low_groups), dtype=torch.float64)
        for g, units in enumerate(low_groups.values()):
            members[units, g] = 1.0
        cdim = session.layers[lower]
        per_batch = max(1, options.batch_size // len(group_units))
        n = 0
        with Progress(f"attribution graph {name}", len(ids), progress, unit="img") as bar:
            for chunk, x, _ in load_batches(session.dataset, ids, session.loaded.transform, per_batch, session.device):
                target = torch.full((len(chunk),), index, device=session.device)
                _, total = target_relevance(attribution, session.composite, x, target, {lower: cdim})
                denom = total[lower].abs().sum(1).clamp_min(torch.finfo(torch.float64).tiny).cpu()  # (B,)
                cond = group_relevance(attribution, session.composite, x, index, upper, group_units, {lower: cdim})
                flow = cond[lower].cpu() @ members  # (B, G_up, G_low)
                edge_sum += (flow / denom[:, None, None]).sum(0)
                n += len(chunk)
                bar.advance(len(chunk))
        edges = edge_sum / max(n, 1)
        nodes = []
        for layer, groups in ((lower, low_groups), (upper, up_groups)):
            means = rel[rel["layer"] == layer].set_index("unit")["rel_mean"]
            for label, units in groups.items():
                nodes.append({"id": f"{layer}:{label}", "layer": layer, "label": label, "units": units,
                              "relevance": float(means.loc[units].sum())})
        node_frame = pd.DataFrame(nodes)
        up_ids = [f"{upper}:{label}" for label in up_groups]
        low_ids = [f"{lower}:{label}" for label in low_groups]
        edge_frame = pd.DataFrame([{"source": up_ids[i], "target": low_ids[j], "weight": float(edges[i, j])}
                                   for i in range(len(up_ids)) for j in range(len(low_ids))])
        json_path = Path(out) if out is not None else folder(atlas) / f"graph_{index}_{lower}__{upper}.json"
        result = GraphResult(node_frame, edge_frame, {
            "class_index": index, "class_name": name, "lower": lower, "upper": upper, "n_samples": n,
            "samples": meta.get("samples", "top5"), "unlabelled": UNLABELLED,
            "labels": "given" if given else set_name(*labels.iloc[0][["method", "backend", "probe"]]),
            "options": options.as_dict(), "seconds": time.perf_counter() - t0}, json_path.with_suffix(".json"))
        write_graph(result)
        return result


def write_graph(result: GraphResult) -> None:
    """Write the graph as JSON to ``result.json_path`` (atomically)."""
    import json

    from unitlens.atlas.files import atomic_write

    text = json.dumps(result.as_dict(), indent=2, default=float) + "\n"
    atomic_write(result.json_path, lambda tmp: tmp.write_text(text))
