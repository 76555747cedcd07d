"""Where a labeller's concepts come from, as probe vectors in a backend's space or as probe-set columns.

- ``"probe"``: the probe set's concept names as text (``signs_and_symbols`` is embedded as "signs and symbols",
  ``animals/birds`` as "birds"), with the lens prompt templates; the label keeps the probe set's name, so it can
  be judged on the probe images.
- ``"probe-images"``: each concept's visible probe images, their normalised embeddings averaged (an image probe).
- a text file or folder of concept folders, as ``unitlens lens label --concepts`` takes them; a list of strings:
  text concepts.

Text concepts need a backend with a text tower; without one the error names the backends that have it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from unitlens.errors import BadInput, LensError
from unitlens.lens.probes import TEMPLATES, Probe, concept_probes, load_concepts, text_probes

PROBE_TEXT = "probe"
PROBE_IMAGES = "probe-images"
TEXT_BACKENDS = ("offline-vl (offline, the lens default)", "openclip:MobileCLIP-S2/datacompdr",
                 "hf:openai/clip-vit-base-patch32")


def concept_text(name: str) -> str:
    """The words a probe concept name stands for: last path part, ``_``/``-`` as spaces."""
    return name.split("/")[-1].split(":")[-1].replace("_", " ").replace("-", " ").strip() or name


def require_text(backend, method: str) -> None:
    if not getattr(backend, "has_text", False):
        raise LensError(f"method {method} with text concepts needs a backend with a text tower, and '{backend.name}' "
                        f"has none; use one of {', '.join(TEXT_BACKENDS)} (--backend), or image concepts "
                        f"(--concepts {PROBE_IMAGES}, or a folder of concept image folders)")


def is_text(concepts) -> bool:
    """Whether ``concepts`` will be embedded as text (before anything is loaded)."""
    if isinstance(concepts, (list, tuple)):
        return True
    if str(concepts) == PROBE_TEXT:
        return True
    if str(concepts) == PROBE_IMAGES:
        return False
    return not Path(concepts).expanduser().is_dir()


def probe_vectors(ctx, backend, method: str, templates: Sequence[str] = TEMPLATES,
                  image_null: torch.Tensor | None = None, atlas=None) -> list[Probe]:
    """The concepts of ``ctx`` as probes in ``backend``'s space (names = the labels they give)."""
    concepts = ctx.concepts
    if isinstance(concepts, (list, tuple)) or str(concepts) == PROBE_TEXT:
        names = list(concepts) if isinstance(concepts, (list, tuple)) else ctx.contrasting()
        require_text(backend, method)
        probes = text_probes(backend, [concept_text(n) if str(concepts) == PROBE_TEXT else n for n in names],
                             templates=templates)
        for probe, name in zip(probes, names):
            probe.name = name
        return probes
    if str(concepts) == PROBE_IMAGES:
        vectors = ctx.store.embeddings(backend, progress=ctx.progress)[torch.as_tensor(ctx.rows, dtype=torch.long)]
        member = torch.from_numpy(ctx.membership)
        probes = []
        keep = set(ctx.contrasting())  # a concept of no (or of every) visible image cannot be a label here
        for k, name in enumerate(ctx.store.concepts):
            rows = torch.nonzero(member[:, k]).flatten()
            if name not in keep:
                continue
            probes.append(Probe(name, "image", F.normalize(vectors[rows].mean(0), dim=-1), image_null, len(rows)))
        if not probes:
            raise BadInput("no visible probe image shows any concept")
        return probes
    concept_set = load_concepts(concepts)
    if concept_set.kind == "text":
        require_text(backend, method)
        return text_probes(backend, concept_set.names, templates=templates)
    return concept_probes(backend, concept_set, atlas=atlas, null_vector=image_null,
                          image_null="dataset" if image_null is not None else "none", progress=ctx.progress)


def probe_columns(ctx) -> list[str]:
    """The probe-set concepts a formula may use: all, or those a text file / concept folder / list names; only
    those with contrast over the visible images (``LabelContext.contrasting``)."""
    concepts = ctx.concepts
    have = ctx.store.concepts
    if str(concepts) in (PROBE_TEXT, PROBE_IMAGES):
        return ctx.contrasting()
    names = list(concepts) if isinstance(concepts, (list, tuple)) else load_concepts(concepts).names
    unknown = [n for n in names if n not in have]
    if unknown:
        raise BadInput(f"invert labels with the probe set's own concept columns; {', '.join(unknown)} "
                       f"{'is' if len(unknown) == 1 else 'are'} not among them ({', '.join(have)}); use "
                       f"--concepts {PROBE_TEXT} or name a subset of them")
    kept = ctx.contrasting(names)
    if not kept:
        raise BadInput(f"none of the concepts {', '.join(names)} holds on some but not all of the probe images "
                       "labels are picked from; name concepts that vary over the probe set")
    return kept
