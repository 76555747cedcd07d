"""Probes: a concept as a vector in the backend's space, with the null vector subtracted from alignments.

a(θ, p) = cos(θ, p) − cos(θ, null) = ⟨θ/‖θ‖, p̂ − n̂⟩ (paper eq. 4), so every search and label is one dot
product of the stored unit vectors with ``Probe.query``.

- Text probes average the normalised embeddings of the prompt templates ``"<c>"``, ``"<c>-like"``, ``"a <c>"``,
  ``"an image of a close up of <c>"``; their null is the same average over the empty templates (the concept
  replaced by ""), as in the paper and its reference code.
- Image probes average the normalised embeddings of several images. The paper subtracts a null "representing
  background (noise) present in the concept examples, if available" but names none for images, and its
  reference code (``semanticlens.image_probing``) subtracts nothing. unitlens offers two nulls for images:
  ``none`` and ``dataset`` (the mean normalised embedding of a spread of the atlas's own images: up to 512,
  evenly spaced ids, whole images; stored at embed time). Defaults:

  * ``search`` with images: ``none``, as the reference. cos(θ, null) is a per-unit offset; on the offline
    backend (all-positive CNN features, every θ within cos 0.85–0.95 of the dataset mean) that offset dominates
    the ranking: with the dataset null a probe made of a unit's own 30 concept examples does not even
    retrieve that unit first (it does with ``none``, a = 1).
  * ``label`` with image-folder concepts: ``dataset``. The offset does not change which concept is best for
    a unit, but it sets the bar for ``none``: without a null every unit of such a backend has cos > 0.5 to
    every concept and clears the paper's 0.025 threshold, with it a unit is labelled only when it is closer
    to the concept than to the average dataset image by the threshold.

Concept sets for ``label`` come from a text file (one concept per line; needs a text encoder) or a folder of
sub-folders (one per concept; its images averaged). Probe images that are samples of the atlas reuse the
atlas's embedding cache.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from unitlens.errors import BadInput, LensError
from unitlens.lens.defaults import IMAGE_NULLS, TEXT_NULLS

TEMPLATES = ("{}", "{}-like", "a {}", "an image of a close up of {}")
NULL_SAMPLES = 512


@dataclass
class Probe:
    """A concept vector ``vector`` (normalised) and the null it is compared against (normalised, or None)."""

    name: str
    kind: str  # "text" or "image"
    vector: torch.Tensor
    null: torch.Tensor | None = None
    n_inputs: int = 1
    sources: list[str] = field(default_factory=list)

    @property
    def query(self) -> torch.Tensor:
        """p̂ − n̂: ⟨θ̂, query⟩ = cos(θ, p) − cos(θ, null)."""
        return self.vector - self.null if self.null is not None else self.vector


def _require_text(backend) -> None:
    if not getattr(backend, "has_text", False):
        raise LensError(
            f"backend '{backend.name}' has no text encoder, so text probes and text concept lists cannot be "
            "embedded; probe with images (--image PATH, or a concept folder of image sub-folders), or embed the "
            "atlas with a vision-language backend: offline-vl (offline, the default), or for real audits "
            "openclip:MobileCLIP-S2/datacompdr"
        )


def _text_mean(backend, texts: list[str], n_templates: int) -> torch.Tensor:
    emb = F.normalize(backend.encode_text(texts).float(), dim=-1)
    return F.normalize(emb.reshape(-1, n_templates, emb.shape[-1]).mean(1), dim=-1)


def text_probes(backend, concepts: Sequence[str], templates: Sequence[str] = TEMPLATES, null: str = "template",
                batch_size: int = 256) -> list[Probe]:
    """One probe per concept: templates averaged; null = the empty templates averaged (``null='none'``: no null)."""
    _require_text(backend)
    if null not in TEXT_NULLS:
        raise BadInput(f"text null must be one of {TEXT_NULLS}")
    concepts = [c.strip() for c in concepts]
    if not concepts or any(not c for c in concepts):
        raise LensError("a text probe needs a non-empty concept")
    templates = list(templates)
    texts = [t.format(c) for c in concepts for t in templates]
    vectors = torch.cat([_text_mean(backend, texts[s:s + batch_size * len(templates)], len(templates))
                         for s in range(0, len(texts), batch_size * len(templates))])
    n = _text_mean(backend, [t.format("") for t in templates], len(templates))[0] if null == "template" else None
    return [Probe(c, "text", vectors[i], n, len(templates), [t.format(c) for t in templates])
            for i, c in enumerate(concepts)]


def text_probe(backend, concept: str, templates: Sequence[str] = TEMPLATES, null: str = "template") -> Probe:
    return text_probes(backend, [concept], templates, null)[0]


# ------------------------------------------------------------------------------------------ images
def image_files(path: str | Path) -> list[Path]:
    """A file, or the image files under a folder (recursive, sorted)."""
    from unitlens.data.datasets import IMAGE_SUFFIXES

    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise LensError(f"probe folder {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if not path.is_file():
        raise LensError(f"probe image {path} does not exist")
    return [path]


def embed_paths(backend, paths: Sequence[str | Path], atlas=None, progress: bool = False) -> torch.Tensor:
    """(n, D) normalised embeddings of image files; files that are samples of ``atlas`` use its cache."""
    from unitlens.backends.cache import EmbeddingCache, embed_images
    from unitlens.data.images import open_rgb

    paths = [Path(p).expanduser().resolve() for p in paths]
    out = torch.empty(len(paths), backend.dim)
    known: dict[str, int] = {}
    if atlas is not None:
        samples = atlas.samples()
        known = {str(Path(p).resolve()): int(i) for p, i, s in
                 zip(samples["path"], samples["id"], samples["skipped"]) if not s}
    cached = [(k, known[str(p)]) for k, p in enumerate(paths) if str(p) in known]
    if cached:
        vecs = EmbeddingCache(atlas, backend).get([i for _, i in cached], progress=progress)
        for (k, _), v in zip(cached, vecs):
            out[k] = v
    rest = [k for k, p in enumerate(paths) if str(p) not in known]
    if rest:
        images = []
        for k in rest:
            try:
                images.append(open_rgb(paths[k]))
            except Exception as err:
                raise LensError(f"cannot read probe image {paths[k]}: {err}") from err
        out[rest] = embed_images(backend, images, progress=progress)
    return F.normalize(out, dim=-1)


def dataset_null(atlas, backend, n: int = NULL_SAMPLES, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean normalised embedding (normalised) of up to ``n`` evenly spaced, readable atlas images, and their ids."""
    from unitlens.backends.cache import EmbeddingCache

    samples = atlas.samples()
    ids = torch.tensor(samples.loc[~samples["skipped"], "id"].to_numpy(), dtype=torch.int64)
    if len(ids) > n:
        ids = ids[torch.linspace(0, len(ids) - 1, n).round().long()]
    vecs = EmbeddingCache(atlas, backend).get(ids, progress=progress)
    return F.normalize(vecs.mean(0), dim=-1), ids


def _image_null(null: str, null_vector, atlas, backend, progress: bool, how_to_skip: str):
    """The null vector of image probes: None for ``none``; for ``dataset`` the given one or the atlas's."""
    if null != "dataset":
        return None
    if null_vector is not None:
        return null_vector
    if atlas is None:
        raise LensError(f"the dataset null of image probes needs the atlas ({how_to_skip})")
    return dataset_null(atlas, backend, progress=progress)[0]


def image_probe(backend, images: Sequence, name: str | None = None, atlas=None, null: str = "none",
                null_vector: torch.Tensor | None = None, progress: bool = False) -> Probe:
    """One probe from several images (paths or folders, or PIL images), their normalised embeddings averaged.

    ``null='dataset'`` subtracts ``null_vector`` (default: the atlas's dataset null, see the module doc).
    """
    from PIL import Image

    from unitlens.backends.cache import embed_images

    if null not in IMAGE_NULLS:
        raise BadInput(f"image null must be one of {IMAGE_NULLS}")
    if not images:
        raise LensError("an image probe needs at least one image")
    pil = [im for im in images if isinstance(im, Image.Image)]
    files = [f for im in images if not isinstance(im, Image.Image) for f in image_files(im)]
    parts = []
    if files:
        parts.append(embed_paths(backend, files, atlas, progress))
    if pil:
        parts.append(embed_images(backend, [im.convert("RGB") for im in pil]))
    vector = F.normalize(torch.cat(parts).mean(0), dim=-1)
    n = _image_null(null, null_vector, atlas, backend, progress, "pass null='none'")
    n_in = len(files) + len(pil)
    first = Path(str(images[0])).name if not isinstance(images[0], Image.Image) else "image"
    label = name or (first if n_in == 1 else f"{n_in} images ({first}, ...)")
    return Probe(label, "image", vector, n, n_in, [str(f) for f in files])


# ------------------------------------------------------------------------------------------ concept sets
@dataclass
class ConceptSet:
    """Concepts to label with: names, and for image concepts the files of each."""

    names: list[str]
    kind: str  # "text" or "image"
    files: dict[str, list[Path]] = field(default_factory=dict)
    source: str = ""


def load_concepts(path: str | Path) -> ConceptSet:
    """A text file (one concept per line; '#' comments and blank lines ignored) or a folder of concept folders."""
    from unitlens.data.datasets import IMAGE_SUFFIXES

    path = Path(path).expanduser()
    if path.is_dir():
        files = {}
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            imgs = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if imgs:
                files[sub.name] = imgs
        if not files:
            raise LensError(f"concept folder {path} has no sub-folder with images: give one sub-folder of images "
                            "per concept (or a text file with one concept per line)")
        return ConceptSet(list(files), "image", files, str(path))
    if not path.is_file():
        raise LensError(f"concept list {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LensError(f"cannot read concept list {path}: {err}") from err
    names = list(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")))
    if not names:
        raise LensError(f"concept list {path} is empty: write one concept per line")
    return ConceptSet(names, "text", {}, str(path))


def load_parents(path: str | Path) -> dict[str, str]:
    """A concept -> parent mapping from a YAML or JSON file (``{concept: parent}``, or ``{parent: [concepts]}``)."""
    import json

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LensError(f"cannot read parents file {path}: {err}") from err
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:
        raise LensError(f"parents file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                        f"{err}") from err
    if not isinstance(data, dict):
        raise LensError(f"parents file {path} must map concept -> parent (or parent -> [concepts])")
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            for concept in value:
                out[str(concept)] = str(key)
        else:
            out[str(key)] = str(value)
    return out


def concept_probes(backend, concepts: ConceptSet, atlas=None, null_vector: torch.Tensor | None = None,
                   text_null: str = "template", image_null: str = "dataset", progress: bool = False) -> list[Probe]:
    """Probe vectors of a concept set (text: templates; image folders: images averaged, one embedding pass)."""
    if concepts.kind == "text":
        return text_probes(backend, concepts.names, null=text_null)
    flat = [f for name in concepts.names for f in concepts.files[name]]
    vecs = embed_paths(backend, flat, atlas, progress)
    n = _image_null(image_null, null_vector, atlas, backend, progress, "pass image_null='none'")
    probes, start = [], 0
    for name in concepts.names:
        k = len(concepts.files[name])
        probes.append(Probe(name, "image", F.normalize(vecs[start:start + k].mean(0), dim=-1), n, k,
                            [str(f) for f in concepts.files[name]]))
        start += k
    return probes
