"""``audit_test(model, cls, valid_images, spurious_images)``: the model test of paper 002, fig. 3a step 3.

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

from unitlens.audit.logits import model_logits
from unitlens.errors import AuditError


@dataclass
class AucResult:
    """The AUC of a class logit separating valid (positive) from spurious images, and per-set statistics."""

    auc: float
    table: pd.DataFrame  # set (valid, spurious), images, logit_mean, logit_std, rank_mean, top1, top5
    class_index: int
    class_name: str
    skipped: list[str] = field(default_factory=list)


def audit_test(model, cls, valid_images, spurious_images, batch_size: int = 32, device=None,
               progress: bool = False) -> AucResult:
    """The class logit on ``valid_images`` (positives) against ``spurious_images`` (negatives).

    ``model``: a ``LoadedModel``; ``cls``: a class index or name; the image sets: folders (recursive) or
    .txt/.csv file lists.
    """
    from sklearn.metrics import roc_auc_score

    from unitlens.zoo.classes import resolve_class

    index, name = resolve_class(model, cls)
    valid = model_logits(model, valid_images, batch_size=batch_size, device=device, progress=progress,
                         what="valid images")
    spurious = model_logits(model, spurious_images, batch_size=batch_size, device=device, progress=progress,
                            what="spurious images")
    if index >= valid.plain.shape[1]:
        raise AuditError(f"class {index} is out of range: the model has {valid.plain.shape[1]} outputs")
    labels = [1] * len(valid.ids) + [0] * len(spurious.ids)
    scores = valid.plain[:, index].tolist() + spurious.plain[:, index].tolist()
    auc = float(roc_auc_score(labels, scores))
    table = pd.DataFrame([{"set": "valid", **valid.stats(index)}, {"set": "spurious", **spurious.stats(index)}])
    return AucResult(auc, table, index, name, valid.skipped + spurious.skipped)
