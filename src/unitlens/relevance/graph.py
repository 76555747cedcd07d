"""``attribution_graph(atlas, cls, layers)``: how the labelled unit groups of two layers feed each other in the
model's decision for one class (paper supplementary D.5), as JSON and a figure.

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

from unitlens.atlas.labels import LabelStore, set_name
from unitlens.errors import BadInput, RelevanceError, RelevanceNotComputed
from unitlens.relevance.defaults import BATCH_SIZE, GRAPH_MIN_RELEVANCE
from unitlens.report.graph_plots import plot_graph
from unitlens.runtime import Progress

UNLABELLED = "?"


@dataclass
class GraphResult:
    nodes: pd.DataFrame  # id, layer, label, units (list), relevance
    edges: pd.DataFrame  # source (upper node id), target (lower node id), weight
    meta: dict
    json_path: Path | None = None
    png_path: Path | None = None

    def as_dict(self) -> dict:
        return {**self.meta, "nodes": self.nodes.to_dict("records"), "edges": self.edges.to_dict("records")}


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


def attribution_graph(atlas, cls, layers, backend=None, labels: pd.DataFrame | None = None,
                      min_relevance: float = GRAPH_MIN_RELEVANCE, batch_size: int = BATCH_SIZE, device=None,
                      progress: bool = True, model=None, out=None) -> GraphResult:
    """The attribution graph of class ``cls`` between two layers (``"lower,upper"`` or a pair; order is taken
    from the atlas). ``labels`` (layer, unit, label) overrides the stored lens labels of ``backend``. Writes
    ``out`` (JSON; default ``relevance/graph_<class>_<lower>__<upper>.json``) and a PNG next to it."""
    from unitlens.atlas.atlas import Atlas
    from unitlens.data.loading import load_batches
    from unitlens.relevance.attribute import (
        Attribution,
        class_relevance,
        group_relevance,
    )
    from unitlens.relevance.class_relevance import select_samples
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
        up_groups = _groups(rel, labels, upper, min_relevance)
        low_groups = _groups(rel, labels, lower, min_relevance)
        if not up_groups or not low_groups:
            raise RelevanceError(f"no unit of {upper if not up_groups else lower} has a relevance share of at least "
                f"{min_relevance:g} for class {name}; lower --min-relevance")
        meta = load_meta(atlas, f"class_{index}")
        data = None if meta.get("dataset_fingerprint") == atlas.manifest.dataset.fingerprint else meta.get("data")
        session = open_session(atlas, layers=[lower, upper], data=data, device=device, model=model)
        ids = select_samples(top_predictions(session, progress=progress), index, meta.get("samples", "top5"))
        attribution = Attribution(session.loaded.model, device=session.device)
        group_units = list(up_groups.values())
        edge_sum = torch.zeros(len(up_groups), len(low_groups), dtype=torch.float64)
        low_units = int(rel[rel["layer"] == lower]["unit"].max()) + 1
        members = torch.zeros(low_units, len(low_groups), dtype=torch.float64)
        for g, units in enumerate(low_groups.values()):
            members[units, g] = 1.0
        cdim = session.layers[lower]
        per_batch = max(1, batch_size // len(group_units))
        n = 0
        with Progress(f"attribution graph {name}", len(ids), progress, unit="img") as bar:
            for chunk, x, _ in load_batches(session.dataset, ids, session.loaded.transform, per_batch, session.device):
                target = torch.full((len(chunk),), index, device=session.device)
                _, total = class_relevance(attribution, session.composite, x, target, {lower: cdim})
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
        result = GraphResult(node_frame, edge_frame, {
            "class_index": index, "class_name": name, "lower": lower, "upper": upper, "n_samples": n,
            "samples": meta.get("samples", "top5"), "min_relevance": min_relevance, "unlabelled": UNLABELLED,
            "labels": "given" if given else set_name(*labels.iloc[0][["method", "backend", "probe"]]),
            "seconds": time.perf_counter() - t0})
        stem = f"graph_{index}_{lower}__{upper}"
        json_path = Path(out) if out is not None else folder(atlas) / f"{stem}.json"
        write_graph(result, json_path)
        return result


def write_graph(result: GraphResult, json_path: Path) -> None:
    """Write the graph as JSON and as a two-column figure (PNG, same name)."""
    import json

    from unitlens.atlas.files import atomic_write

    json_path = Path(json_path).with_suffix(".json")
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(result.as_dict(), indent=2, default=float) + "\n"))
    png = plot_graph(result.nodes, result.edges, result.meta, json_path.with_suffix(".png"), UNLABELLED)
    result.json_path, result.png_path = json_path, png
