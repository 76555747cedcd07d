"""``measure_accuracy(model, folder)``: top-1 accuracy of a model on a labelled image folder (one sub-folder per
class, named by class index, class name or synonym, or WordNet id), for a study's MIS-vs-accuracy figures."""
from __future__ import annotations

import torch

from unitlens.data.datasets import load_dataset
from unitlens.data.loading import load_batches
from unitlens.errors import BadInput
from unitlens.runtime import Progress, pick_device, prepare_model
from unitlens.zoo.classes import folder_classes
from unitlens.zoo.factory import LoadedModel


def measure_accuracy(loaded: LoadedModel, folder: str, batch_size: int = 64, device=None,
                     progress: bool = True) -> dict:
    """``{"accuracy", "images", "classes"}``: the share of the folder's readable images whose top-1 class is their
    sub-folder's class (images directly in the folder have no class: an error)."""
    data = load_dataset(folder)
    labels = data.samples["label"].tolist()
    if any(label == "" for label in labels):
        raise BadInput(f"{folder} holds images outside class sub-folders; put every image in a sub-folder named by "
                       "its class")
    classes = folder_classes(loaded, sorted(set(labels)))
    target = torch.tensor([classes[label] for label in labels])
    device = pick_device(device)
    net = prepare_model(loaded.model, device)
    hits = seen = 0
    with torch.inference_mode(), Progress("accuracy", len(data), progress, unit="img") as bar:
        for ids, x, _ in load_batches(data, range(len(data)), loaded.transform, batch_size, device):
            predicted = net(x).argmax(-1).cpu()
            hits += int((predicted == target[ids]).sum())
            seen += len(ids)
            bar.advance(len(ids))
    if seen == 0:
        raise BadInput(f"no image of {folder} could be read; nothing to measure accuracy on")
    return {"accuracy": hits / seen, "images": seen, "classes": len(classes)}
