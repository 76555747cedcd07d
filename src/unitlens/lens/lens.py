"""``Lens``: one atlas seen through one embedding backend, with the SemanticLens steps as methods (the functions
``embed_units``, ``search``, ``label``, ``compare``, ``measures`` and ``plot_lens`` on that atlas), and
``LensUnit``: one unit's θ and concept examples."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from unitlens import notebook
from unitlens.atlas import Atlas
from unitlens.backends import Backend, as_backend
from unitlens.errors import LensError
from unitlens.lens.analysis import (
    CompareResult,
    LabelResult,
    MeasuresResult,
    SearchResult,
    compare,
    label,
    measures,
    search,
)
from unitlens.lens.defaults import CARD_EXEMPLARS, IMAGE_NULL, LABEL_THRESHOLD, TEXT_NULL
from unitlens.lens.embed import EmbedResult, embed_units
from unitlens.lens.figures import plot_lens, plot_unit
from unitlens.lens.options import CompareOptions, EmbedOptions, LensPlotOptions, MeasuresOptions, SearchOptions
from unitlens.lens.probes import Probe
from unitlens.lens.store import LensStore
from unitlens.options import takes_options
from unitlens.report.figures import save_figure


@dataclass
class LensUnit:
    """One embedded unit: its θ (the mean embedding of its concept examples) and those examples."""

    store: LensStore
    layer: str
    unit: int

    @property
    def theta(self) -> torch.Tensor:
        """θ (D,): the mean of the normalised concept-example embeddings (its norm says how alike they are)."""
        return self.store.read_layer(self.layer).theta[self.unit]

    @property
    def constant(self) -> bool:
        """Whether the unit is constant over the dataset (then left out of search, labels and measures)."""
        return bool(self.store.read_layer(self.layer).constant[self.unit])

    def examples(self) -> pd.DataFrame:
        """The concept examples, most activating first: sample id, file, activation and crop box (or None)."""
        data = self.store.read_layer(self.layer)
        dataset = self.store.atlas.dataset()
        rows = [{"id": int(data.ids[self.unit, j]), "path": str(dataset.path(int(data.ids[self.unit, j]))),
                 "activation": float(data.vals[self.unit, j]),
                 "box": tuple(data.boxes[self.unit, j].tolist()) if bool(data.has_box[self.unit, j]) else None}
                for j in torch.nonzero(data.mask[self.unit]).flatten().tolist()]
        return pd.DataFrame(rows, columns=["id", "path", "activation", "box"])

    def images(self, n: int | None = None) -> list:
        """The first ``n`` (default: all) concept examples as PIL images, cropped as the lens embedded them."""
        data = self.store.read_layer(self.layer)
        return self.store.example_images(self.layer, self.unit, n or data.ids.shape[1])[0]

    def plot(self, exemplars: int = CARD_EXEMPLARS, path: str | Path | None = None) -> Any:
        """The unit's card (``plot_unit``): its top ``exemplars`` concept examples; saved as PNG to ``path``."""
        return plot_unit(self.store, self.layer, self.unit, exemplars, path=path)

    def _repr_html_(self) -> str:
        facts = {"backend": self.store.backend, "‖θ‖": f"{float(self.theta.norm()):.4g}",
                 "constant": self.constant, "concept examples": len(self.examples())}
        values = self.store.example_images(self.layer, self.unit, notebook.MAX_ROWS)[1]
        return notebook.header(f"{self.layer} #{self.unit}", facts) + notebook.images(
            zip(self.images(notebook.MAX_ROWS), (f"act {v:.3g}" for v in values)), title="top concept examples")


class Lens:
    """One atlas seen through one embedding backend, with the SemanticLens steps as methods.

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``).
    backend
        The embedding backend: a name, a ``Backend`` instance (kept, to embed probes), or None: the backend the
        atlas is embedded with (the only one, or offline-vl when it has several), and offline-vl to embed.
    device
        Where the backend and the analysed model run (default: CUDA when present).

    Examples
    --------
    >>> lens = Lens("atlas/lite0-demo")  # doctest: +SKIP
    >>> lens.embed(m=30, layers=["blocks.6.*"])  # doctest: +SKIP
    >>> lens.search(text="a star")  # doctest: +SKIP
    """

    def __init__(self, atlas: Atlas | str | Path, backend: Backend | str | None = None,
                 device: str | None = None) -> None:
        self.atlas = Atlas.open(atlas)
        self.backend = backend
        self.device = device
        self._loaded: Backend | None = backend if isinstance(backend, Backend) else None
        self._store: LensStore | None = None

    def __repr__(self) -> str:
        return f"Lens({str(self.atlas.path)!r}, backend={self.backend_name!r})"

    @property
    def backend_name(self) -> str | None:
        """The backend's name (None until the atlas is embedded when none was given)."""
        return self.backend if isinstance(self.backend, str) or self.backend is None else self.backend.name

    @property
    def store(self) -> LensStore:
        """The atlas's lens store of this backend, opened once (``embed`` replaces it)."""
        if self._store is None:
            self._store = LensStore.open(self.atlas, self.backend_name)
        return self._store

    @property
    def layers(self) -> list[str]:
        """The embedded layers, in atlas order."""
        return self.store.layers

    def backend_model(self) -> Backend:
        """The backend itself, to embed probes.

        Returns
        -------
        Backend
            The lens's backend, loaded once, on first use (the one the atlas is embedded with when none was given).
        """
        if self._loaded is None:
            self._loaded = as_backend(self.store.backend, self.device)
        return self._loaded

    @takes_options(EmbedOptions, skip=("backend", "device"))
    def embed(self, options: EmbedOptions | None = None, *, model: Any = None, progress: bool = True) -> EmbedResult:
        """Embed the concept examples of every unit of the chosen layers (``embed_units``).

        Parameters
        ----------
        options
            An ``EmbedOptions`` (its backend is the lens's when the lens has one); any of its fields but backend
            and device may also be given as a keyword argument (see below).
        model
            The analysed model (``LoadedModel``) for crops that run it; loaded from the atlas when None.
        progress
            Show progress bars.

        Returns
        -------
        EmbedResult
            The layers embedded and skipped, the work done; the lens's store is the one it wrote.

        Examples
        --------
        >>> Lens("atlas/lite0-demo").embed(m=30, crop="activation")  # doctest: +SKIP
        """
        options = options or EmbedOptions()
        if options.device is None and self.device is not None:
            options = options.replace(device=self.device)
        backend = self.backend if self.backend is not None else options.backend
        result = embed_units(self.atlas, backend, options, model=model, progress=progress)
        if self.backend is None:
            self.backend = result.store.backend
        self._store = result.store
        return result

    @takes_options(SearchOptions, skip=("backend", "device"))
    def search(self, text: str | None = None, images: Any = None, options: SearchOptions | None = None, *,
               probe: Probe | None = None, progress: bool = True) -> SearchResult:
        """The units whose θ is most aligned with a text or image probe (``search``).

        Parameters
        ----------
        text
            A text probe (needs a backend with a text encoder).
        images
            Probe images or folders of them, averaged.
        options
            A ``SearchOptions``; any of its fields but backend and device may also be given as a keyword argument.
        probe
            A ready ``Probe`` instead of ``text`` or ``images``.
        progress
            Show a progress bar while probe images are embedded.

        Returns
        -------
        SearchResult
            The ``top`` units, best first (``.frame``); in a notebook with each one's top concept example.

        Examples
        --------
        >>> Lens("atlas/lite0-demo").search(text="a star", top=5)  # doctest: +SKIP
        """
        backend = self.backend_model() if probe is None else None
        return search(self.store, text, images, options, backend=backend, probe=probe, progress=progress)

    def label(self, concepts: Any, *, threshold: float = LABEL_THRESHOLD, parents: Any = None,
              layers: list[str] | None = None, text_null: str = TEXT_NULL, image_null: str = IMAGE_NULL,
              write: bool = True, progress: bool = True) -> LabelResult:
        """Label every unit with its best-aligned concept, or none below ``threshold`` (``unitlens.lens.label``).

        Parameters
        ----------
        concepts
            A text file (one concept per line), a folder of concept image folders, a ``ConceptSet``, a list of
            text concepts or a list of ``Probe``.
        threshold, parents, layers, text_null, image_null, write, progress
            As in ``unitlens.lens.label``: the alignment below which a unit gets none (the SemanticLens paper's
            0.025), a concept -> parent mapping, the layers, the nulls of text and image concepts, whether the
            labels are stored, progress bars.

        Returns
        -------
        LabelResult
            The labels (``.frame``), the units per concept and layer (``.counts``), those with none (``.unexpected``).

        Examples
        --------
        >>> Lens("atlas/lite0-demo").label(["star", "stripes", "wheel"]).counts  # doctest: +SKIP
        """
        return label(self.store, concepts, backend=self.backend_model(), threshold=threshold, parents=parents,
                     layers=layers, text_null=text_null, image_null=image_null, write=write, device=self.device,
                     progress=progress)

    @takes_options(CompareOptions, skip=("backend",))
    def compare(self, other: Lens | Atlas | str | Path, options: CompareOptions | None = None) -> CompareResult:
        """How well the units of ``other`` cover this atlas's units, in this backend's space (``compare``).

        Parameters
        ----------
        other
            Another ``Lens``, or an atlas embedded with the same backend.
        options
            A ``CompareOptions``; any of its fields but backend may also be given as a keyword argument.

        Returns
        -------
        CompareResult
            S(A→B) per layer pair (``.matrix``; A is this atlas), each unit's best match, the unmatched units.

        Examples
        --------
        >>> Lens("atlas/lite0-demo").compare("atlas/lite1-demo").matrix  # doctest: +SKIP
        """
        options = (options or CompareOptions()).replace(backend=self.store.backend)
        return compare(self.atlas, other.atlas if isinstance(other, Lens) else other, options)

    @takes_options(MeasuresOptions, skip=("backend",))
    def measures(self, options: MeasuresOptions | None = None) -> MeasuresResult:
        """Clarity, polysemanticity and max similarity per unit, redundancy per layer (``measures``).

        Parameters
        ----------
        options
            A ``MeasuresOptions``; any of its fields but backend may also be given as a keyword argument.

        Returns
        -------
        MeasuresResult
            One row per unit (``.frame``) and per layer (``.layers``).

        Examples
        --------
        >>> Lens("atlas/lite0-demo").measures().layers  # doctest: +SKIP
        """
        options = options or MeasuresOptions()
        if options.device is None and self.device is not None:
            options = options.replace(device=self.device)
        return measures(self.store, options=options)

    @takes_options(LensPlotOptions, skip=("backend", "cards", "units", "exemplars"))
    def plot(self, options: LensPlotOptions | None = None, *, text: str | None = None, images: Any = None,
             path: str | Path | None = None) -> Any:
        """The θ map of a layer (``plot_lens``), coloured by the stored labels or by a probe's alignment.

        Parameters
        ----------
        options
            A ``LensPlotOptions``; its layer, color and projection may also be given as keyword arguments.
        text
            A text probe to colour by.
        images
            Probe images or folders to colour by.
        path
            Where to save the figure as PNG (nothing is saved when None).

        Returns
        -------
        matplotlib.figure.Figure
            The map (a unit's card: ``lens.unit(layer, i).plot()``).

        Examples
        --------
        >>> Lens("atlas/lite0-demo").plot(text="a star", projection="pca")  # doctest: +SKIP
        """
        options = (options or LensPlotOptions()).replace(cards=0)
        backend = self.backend_model() if text is not None or images else None
        fig = plot_lens(self.store, options, backend=backend, text=text, images=images).map
        if path is not None:
            save_figure(fig, path, tight=False)
        return fig

    def unit(self, layer: str, unit: int) -> LensUnit:
        """One unit of an embedded layer: its θ and concept examples (``.images()``, ``.plot()``).

        Parameters
        ----------
        layer
            An embedded layer's name.
        unit
            The unit's index in the layer.

        Returns
        -------
        LensUnit
            The unit (shown in a notebook with its top concept examples).

        Examples
        --------
        >>> Lens("atlas/lite0-demo").unit("blocks.6.0.conv_pwl", 12).images(4)  # doctest: +SKIP
        """
        name = self.store.resolve([layer])[0]
        n_units = self.store.read_layer(name).theta.shape[0]
        if not 0 <= unit < n_units:
            raise LensError(f"unit {unit} is not in layer {name} ({n_units} units)")
        return LensUnit(self.store, name, int(unit))
