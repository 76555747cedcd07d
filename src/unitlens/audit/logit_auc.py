"""``audit_test(model, cls, valid_images, spurious_images)``: the model test of the SemanticLens paper, fig. 3a
step 3.

How well does the logit of class ``cls`` separate images of the class (valid, the positives) from images that show
only the spurious features (the negatives)? The AUC of that logit (scikit-learn's ``roc_auc_score``): 1 = every
valid image scores higher than every spurious one; 0.5 = the logit cannot tell the sets apart; below 0.5 the
spurious images score higher. The paper reports AUC > 0.98 for single spurious concepts of "Ox" and 0.91 when they
are combined. Per set, the table gives the mean and spread of the class logit, the mean rank of the class among
all outputs (1 = top prediction) and how often the class is the top-1 / among the top-5 predictions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from unitlens import notebook
from unitlens.audit.logits import model_logits
from unitlens.audit.options import AuditTestOptions
from unitlens.errors import AuditError
from unitlens.options import takes_options


@dataclass
class AucResult:
    """The AUC of a class logit separating valid (positive) from spurious images, and per-set statistics."""

    auc: float
    table: pd.DataFrame  # set (valid, spurious), images, logit_mean, logit_std, rank_mean, top1, top5
    class_index: int
    class_name: str
    skipped: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        facts = {"AUC": f"{self.auc:.4f} (1: the logit separates the sets perfectly, 0.5: not at all)",
                 "skipped images": len(self.skipped)}
        return (notebook.header(f"logit of class {self.class_index} '{self.class_name}': valid against spurious "
                                "images", facts) + notebook.table(self.table))


@takes_options(AuditTestOptions)
def audit_test(model, cls, valid_images, spurious_images, options: AuditTestOptions | None = None, *,
               progress: bool = True) -> AucResult:
    """How well the logit of a class separates images of the class from images with its spurious features only.

    Parameters
    ----------
    model
        A ``LoadedModel``.
    cls
        The class: its index or name.
    valid_images
        Images of the class (the positives): a folder (searched recursively) or a .txt/.csv file list.
    spurious_images
        Images that show only the spurious features (the negatives), given the same way.
    options
        An ``AuditTestOptions``; any of its fields may also be given as a keyword argument (see below).
    progress
        Show progress bars.

    Returns
    -------
    AucResult
        The AUC of the class logit (1: every valid image scores higher than every spurious one; 0.5: the logit
        cannot tell the sets apart), and per set the logit's mean and spread, the class's mean rank and its top-1
        and top-5 rates.
    """
    options = options or AuditTestOptions()
    from sklearn.metrics import roc_auc_score

    from unitlens.zoo.classes import resolve_class

    index, name = resolve_class(model, cls)
    valid = model_logits(model, valid_images, options, progress=progress, what="valid images")
    spurious = model_logits(model, spurious_images, options, progress=progress, what="spurious images")
    if index >= valid.plain.shape[1]:
        raise AuditError(f"class {index} is out of range: the model has {valid.plain.shape[1]} outputs")
    labels = [1] * len(valid.ids) + [0] * len(spurious.ids)
    scores = valid.plain[:, index].tolist() + spurious.plain[:, index].tolist()
    auc = float(roc_auc_score(labels, scores))
    table = pd.DataFrame([{"set": "valid", **valid.stats(index)}, {"set": "spurious", **spurious.stats(index)}])
    return AucResult(auc, table, index, name, valid.skipped + spurious.skipped)
