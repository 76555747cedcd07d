"""``resolve_class(model, spec)``: an output class given by index or by name, and the names of a model's classes;
``folder_classes(model, folders)``: the class each sub-folder of a labelled image folder names.

Names come from the model's timm pretrained config when it has ImageNet-1k (or another timm-known subset) labels,
else from ``LoadedModel.extra["class_names"]`` (set it for your own checkpoints); otherwise classes are only
addressable by index. A name matches a class when it equals (case-insensitive) one of the comma-separated synonyms
of its description ("beacon, lighthouse, beacon light, pharos" answers to "lighthouse"), or the whole description.
"""
from __future__ import annotations

import re

from unitlens.errors import BadInput
from unitlens.zoo.factory import LoadedModel


def _num_classes(loaded: LoadedModel) -> int | None:
    model = loaded.model
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    head = getattr(model, "fc", None) or getattr(model, "classifier", None) or getattr(model, "head", None)
    if head is not None and hasattr(head, "out_features"):
        return int(head.out_features)
    return None


def class_names(loaded: LoadedModel) -> list[str] | None:
    """The description of every output class (index order), or None when the model does not say."""
    names = loaded.extra.get("class_names")
    if names:
        return [str(n) for n in names]
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(loaded.model)
    except Exception:  # not a timm model, or timm cannot tell its label set
        subset = None
    if subset is None:
        n = _num_classes(loaded)
        if n != 1000:
            return None
        subset = "imagenet-1k"  # torchvision ImageNet heads carry no metadata; 1000 outputs are ImageNet-1k
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


def short_name(description: str) -> str:
    """The first synonym of a class description ("beacon, lighthouse, ..." -> "beacon")."""
    return description.split(",")[0].strip()


def resolve_class(loaded: LoadedModel, spec: str | int) -> tuple[int, str]:
    """(index, name) of the class ``spec`` (an index, a numeric string, or a class name or synonym).

    The name is the synonym that matched, or the first synonym for an index."""
    names = class_names(loaded)
    n = len(names) if names else _num_classes(loaded)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if n is not None and not 0 <= index < n:
            raise BadInput(f"class index {index} is out of range: model '{loaded.name}' has {n} output classes "
                             f"(0..{n - 1})")
        return index, short_name(names[index]) if names else str(index)
    if not names:
        raise BadInput(f"model '{loaded.name}' has no class names; give the class as an index (0..{(n or 0) - 1}) "
                         "or set LoadedModel.extra['class_names']")
    key = text.lower()
    exact = [i for i, d in enumerate(names) if d.lower() == key]
    synonym = [i for i, d in enumerate(names) if key in (s.strip().lower() for s in d.split(","))]
    hits = exact or synonym
    if len(hits) == 1:
        if exact:
            return hits[0], short_name(names[hits[0]])
        return hits[0], next(s.strip() for s in names[hits[0]].split(",") if s.strip().lower() == key)
    if hits:
        options = "; ".join(f"{i}: {names[i]}" for i in hits[:8])
        raise BadInput(f"class name '{text}' is ambiguous for model '{loaded.name}' ({options}); give the index")
    close = [f"{i}: {d}" for i, d in enumerate(names) if key in d.lower()][:8]
    hint = f"; names containing it: {'; '.join(close)}" if close else ""
    raise BadInput(f"model '{loaded.name}' has no class named '{text}'{hint}")


def folder_classes(loaded: LoadedModel, folders: list[str]) -> dict[str, int]:
    """Class index of every labelled sub-folder name: a class index, a class name or synonym (``_`` read as a
    space), or an ImageNet WordNet id for ImageNet models; an error names the folders that match no class."""
    names = class_names(loaded)
    wnids = None
    if names is not None and len(names) == 1000:
        from timm.data import ImageNetInfo

        wnids = {w: i for i, w in enumerate(ImageNetInfo("imagenet-1k").label_names())}
    out, bad = {}, []
    for folder in folders:
        index = None
        if wnids is not None and re.fullmatch(r"n\d{8}", folder):
            index = wnids.get(folder)
        for candidate in (folder, folder.replace("_", " ")):
            if index is not None:
                break
            try:
                index = resolve_class(loaded, candidate)[0]
            except ValueError:
                pass
        if index is None:
            bad.append(folder)
        else:
            out[folder] = index
    if bad:
        raise BadInput(f"labelled sub-folder(s) {', '.join(repr(b) for b in bad)} name no class of model "
                       f"'{loaded.name}': name each sub-folder by a class index, a class name or synonym "
                       "(e.g. 'sports car' or 'sports_car'), or an ImageNet WordNet id (n04285008)")
    return out
