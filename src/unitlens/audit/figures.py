"""``plot_audit``: the audit scatter and the sheet of flagged units, with their images gathered from the atlas and
drawn by ``unitlens.report.audit_plots``."""
from __future__ import annotations

from pathlib import Path

from unitlens.audit.alignment import AuditResult, audit_basename
from unitlens.errors import BadInput
from unitlens.lens.store import LensStore
from unitlens.report.audit_plots import plot_flagged, plot_scatter


def plot_audit(result: AuditResult, out, n_labels: int = 8, n_units: int = 12, n_exemplars: int = 5,
               n_relevant: int = 3) -> list[Path]:
    """Write ``<class>_scatter.png`` and, when units are flagged, ``<class>_flagged.png`` into ``out``."""
    if result.frame.empty:
        raise BadInput(f"no unit reaches relevance {result.min_relevance:g}; nothing to plot")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = audit_basename(result.class_index, result.class_name)
    paths = [plot_scatter(result, out / f"{base}_scatter.png", n_labels)]
    flagged = result.flagged.head(n_units)
    if flagged.empty:
        return paths
    store = LensStore.open(result.atlas, result.backend)
    dataset = store.atlas.dataset()
    images = {(row.layer, int(row.unit)): (store.example_images(row.layer, int(row.unit), n_exemplars, dataset)[0],
                                           [dataset.image(int(i)) for i in list(row.relevant_ids)[:n_relevant]])
              for row in flagged.itertuples()}
    sheet = plot_flagged(result, images, out / f"{base}_flagged.png", n_exemplars, n_relevant)
    return paths + ([sheet] if sheet is not None else [])
