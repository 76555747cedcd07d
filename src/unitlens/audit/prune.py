"""``prune_check(model, units, cls, labelled=DIR, spurious=DIR)``: what removing units does (the SemanticLens paper,
section 4.3).

The paper prunes the neurons it labelled spurious (without retraining) and measures clean accuracy and the
sensitivity to the artefacts. Here forward hooks (``unitlens.audit.logits``) replace the given units' outputs,
``ablate='zero'`` by 0 (the paper's pruning; it removes a unit that follows a ReLU) or ``ablate='mean'`` by the
unit's mean activation over the atlas's data (from ``units.parquet``; use it for layers a batch norm follows,
such as EfficientNet's ``conv_pwl``: there 0 becomes the BN's shift, which can be many standard deviations away
from anything the unit produces — a note says so). From one pass per image set:

- on a labelled folder (one sub-folder per class, named by class index, class name or synonym — '_' read as a
  space — or ImageNet WordNet id such as n04285008): top-1 and top-5 accuracy before and after, overall, on the
  audited class's images, and per class;
- on a spurious set (images with the spurious features only): the class logit (mean and rank), and how often
  the class is the top-1 / among the top-5 predictions, before and after.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from unitlens import notebook
from unitlens.audit.logits import Logits, model_logits
from unitlens.audit.options import PruneOptions
from unitlens.errors import AuditError, BadInput
from unitlens.options import takes_options
from unitlens.runtime import split_call


@dataclass
class PruneResult:
    """Accuracy and the class logit before and after ablating units."""

    table: pd.DataFrame  # set, measure, images, before, after, change
    per_class: pd.DataFrame | None  # labelled set: folder, class_index, images, top1_before, top1_after
    units: dict[str, list[int]]
    class_index: int
    class_name: str
    ablate: str
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        facts = {layer: f"{len(us)} units: {', '.join(map(str, us))}" for layer, us in self.units.items()}
        facts["set to"] = "0" if self.ablate == "zero" else "their mean activation"
        notes = "".join(f"<div><i>{notebook.escape(n)}</i></div>" for n in self.notes)
        per_class = notebook.table(self.per_class, "top-1 accuracy per labelled class") \
            if self.per_class is not None and len(self.per_class) > 1 else ""
        return (notebook.header(f"pruning check, class {self.class_index} '{self.class_name}'", facts)
                + notebook.table(self.table, "before and after") + per_class + notes)


def _folder_classes(model, folders: list[str]) -> dict[str, int]:
    """Class index of every labelled sub-folder (``zoo.classes.folder_classes``), as an audit error."""
    from unitlens.zoo.classes import folder_classes

    try:
        return folder_classes(model, folders)
    except BadInput as err:
        raise AuditError(str(err)) from err


def _accuracy_rows(data: Logits, targets: torch.Tensor, index: int, name: str) -> list[dict]:
    rows = []
    k = min(5, data.plain.shape[1])
    own = targets == index
    for what, sel in (("all images", torch.ones_like(own)), (f"images of class {name}", own)):
        if not bool(sel.any()):
            continue
        for top in sorted({1, k}):
            before, after = (_hits(data.of(z)[sel], targets[sel], top) for z in (False, True))
            rows.append({"set": "labelled", "measure": f"top-{top} accuracy, {what}", "images": int(sel.sum()),
                         "before": before, "after": after, "change": after - before})
    return rows


def _hits(logits: torch.Tensor, targets: torch.Tensor, top: int) -> float:
    return float((logits.topk(top, 1).indices == targets[:, None]).any(1).double().mean())


def _mean_values(atlas, units: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Each unit's mean activation over the atlas's data (``units.parquet``), in the order of ``units``."""
    from unitlens.atlas import Atlas

    if atlas is None:
        raise AuditError("ablate='mean' replaces units by their mean activation over an atlas's data: give the atlas")
    table = Atlas.open(atlas).units().set_index(["layer", "unit"])["mean"]
    missing = [f"{layer}:{u}" for layer, us in units.items() for u in us if (layer, u) not in table.index]
    if missing:
        raise AuditError(f"atlas {Atlas.open(atlas).path} has no recorded mean for {', '.join(missing[:5])}; "
                         "ablate units of recorded layers, or use ablate='zero'")
    return {layer: torch.tensor([float(table[(layer, u)]) for u in us]) for layer, us in units.items()}


def _feeds_batch_norm(net: torch.nn.Module, layer: str) -> bool:
    """Whether the module registered right after ``layer`` (its own children aside) is a batch norm."""
    from torch.nn.modules.batchnorm import _BatchNorm

    layer = split_call(layer)[0]  # a call NAME@i of a module run several times: the module
    names = [n for n, _ in net.named_modules()]
    if layer not in names:
        return False
    after = [n for n in names[names.index(layer) + 1:] if not n.startswith(layer + ".")]
    return bool(after) and isinstance(net.get_submodule(after[0]), _BatchNorm)


@takes_options(PruneOptions)
def prune_check(model, units: dict[str, list[int]], cls, options: PruneOptions | None = None, *, labelled=None,
                spurious=None, atlas=None, progress: bool = True) -> PruneResult:
    """Ablate units of a model and compare, before and after, the accuracy on labelled images and the logit of a
    class on images with its spurious features.

    Parameters
    ----------
    model
        A ``LoadedModel`` (its module gets forward hooks while the check runs; they are removed afterwards).
    units
        ``{layer: [unit, ...]}``, the units to ablate (``audited_units`` gives those of a stored audit).
    cls
        The class: its index or name.
    options
        A ``PruneOptions``; any of its fields may also be given as a keyword argument (see below).
    labelled
        A folder with one sub-folder of images per class, named by class index, class name or synonym, or ImageNet
        WordNet id: top-1 and top-5 accuracy, overall, on the class's images and per class.
    spurious
        Images with the spurious features only (a folder or a .txt/.csv file list): the class logit, its rank and
        its top-1 and top-5 rates.
    atlas
        The atlas whose recorded mean activations ``ablate='mean'`` uses.
    progress
        Show progress bars.

    Returns
    -------
    PruneResult
        One row per measure with its value before and after (``table``), the per-class accuracy of the labelled
        set, the ablated units, notes (a layer a batch norm follows) and the images that could not be read.
    """
    options = options or PruneOptions()
    from unitlens.data.datasets import load_dataset
    from unitlens.zoo.classes import resolve_class

    if labelled is None and spurious is None:
        raise AuditError("give a labelled folder, a spurious image set, or both, to measure the pruning on")
    units = {layer: sorted({int(u) for u in us}) for layer, us in units.items() if us}
    values = _mean_values(atlas, units) if options.ablate == "mean" else None
    notes = [f"layer {layer} feeds a batch norm: zeroing its output sets the units to the BN's shift, not to 0; "
             "ablate='mean' (CLI --ablate mean) replaces them by their mean activation instead"
             for layer in units if options.ablate == "zero" and _feeds_batch_norm(model.model, layer)]
    index, name = resolve_class(model, cls)
    rows, per_class, skipped = [], None, []
    if labelled is not None:
        images = load_dataset(labelled)  # folders are checked before the model runs
        if (images.samples["label"] == "").any():
            raise AuditError(f"{labelled} has images outside class sub-folders: put every image in a sub-folder "
                             "named by its class")
        classes = _folder_classes(model, sorted(set(images.samples["label"])))
        data = model_logits(model, images, options, ablate=units, values=values, progress=progress,
                            what="labelled images")
        targets = torch.tensor([classes[lab] for lab in data.labels])
        rows += _accuracy_rows(data, targets, index, name)
        per_class = pd.DataFrame([
            {"folder": folder, "class_index": ci, "images": int(sel.sum()),
             "top1_before": _hits(data.plain[sel], targets[sel], 1),
             "top1_after": _hits(data.of(ablated=True)[sel], targets[sel], 1)}
            for folder, ci in classes.items() for sel in [torch.tensor([lab == folder for lab in data.labels])]])
        skipped += data.skipped
    if spurious is not None:
        data = model_logits(model, spurious, options, ablate=units, values=values, progress=progress,
                            what="spurious images")
        before, after = data.stats(index), data.stats(index, ablated=True)
        k = min(5, data.plain.shape[1])
        for key, measure in (("logit_mean", f"logit of {name}, mean"), ("rank_mean", f"rank of {name}, mean"),
                             ("top1", f"{name} is top-1, rate"), (f"top{k}", f"{name} in top-{k}, rate")):
            rows.append({"set": "spurious", "measure": measure, "images": before["images"], "before": before[key],
                         "after": after[key], "change": after[key] - before[key]})
        skipped += data.skipped
    return PruneResult(pd.DataFrame(rows), per_class, units, index, name, options.ablate, skipped, notes)
