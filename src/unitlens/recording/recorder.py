"""``Recorder``: forward hooks that reduce each selected layer's output and fold a whole batch into its
``LayerState`` (the streaming top-k/bottom-k and statistics) once the forward has finished."""
from __future__ import annotations

import torch
from torch import nn

from unitlens.errors import BadInput
from unitlens.recording.defaults import MERGE_EVERY, TIE_SEED
from unitlens.recording.reduce import input_affine, mean_from_input, reduce_output
from unitlens.recording.state import LayerState
from unitlens.runtime import ForwardHooks, first_tensor, named_modules, split_call
from unitlens.zoo.units import LayerInfo, channel_dim_of


class Recorder:
    """Forward hooks that reduce each selected layer's output; ``commit()`` folds a whole batch into every layer's
    ``LayerState`` once the forward has finished.

    ``run(net, images, ids)`` stages one batch; ``states`` holds the running state per layer. A forward that stops
    half-way (Ctrl-C, an error in a later layer) folds nothing, so a saved state always sits at a batch boundary
    and a resumed run reads every batch exactly once. ``micro_batch`` runs the forward on slices of the batch: on
    a CPU a few images at a time keep each layer's output in cache for the layers (and the hook) that read it
    next; the staged slices are folded together, so the result does not depend on it.

    With ``probe`` the hooks raise nothing: ``seen[name]`` lists, per call of the layer's module in the forward,
    (its output's shape, or its type when it holds no tensor; the error reducing it, or None). The check before
    the pass (``recording.check``) runs the model through these very hooks.
    """

    def __init__(self, model: nn.Module, layers: list[LayerInfo], k: int, spatial: str, tokens: str, device,
                 merge_every: int = MERGE_EVERY, tie_seed: int = TIE_SEED, micro_batch: int | None = None,
                 probe: bool = False):
        self.k, self.spatial, self.tokens, self.device = k, spatial, tokens, device
        self.merge_every, self.tie_seed, self.micro_batch = merge_every, tie_seed, micro_batch
        self.infos = {info.name: info for info in layers}
        self.states: dict[str, LayerState] = {}
        self.ids = torch.empty(0, dtype=torch.int64)  # the sample ids of the batch being staged
        self.rows = 0  # images in the forward running now (a slice of the batch)
        self.staged: dict[str, list[torch.Tensor]] = {}  # this batch's reduced activations, until commit()
        self.seen: dict[str, list[tuple[object, str | None]]] | None = {} if probe else None
        self.affine = {}  # layers whose output means follow from their (smaller) input's means
        if spatial == "mean" and tokens == "mean" and not probe:  # the check reads the outputs: their shapes count
            for name, module in named_modules(model, self.infos).items():
                affine = input_affine(module)
                if affine is not None:
                    self.affine[name] = affine
        self.hooks = ForwardHooks(model, self.infos, self._stage, with_inputs=True)

    def _reduce(self, name: str, inputs, out) -> torch.Tensor:
        """(rows, channels) of one call of layer ``name``; BadInput says why an output cannot be reduced."""
        if not torch.is_tensor(out) or out.ndim < 2:
            what = f"a tensor of shape {tuple(out.shape)}" if torch.is_tensor(out) else f"a {type(out).__name__}"
            raise BadInput(f"its output is {what}, not (batch, channels, ...)")
        if out.shape[0] == 1 < self.rows:
            raise BadInput(f"its output has one row for a batch of {self.rows} images: it does not depend on the "
                           "image (its units are constant)")
        module, call = split_call(name)
        calls = self.hooks.calls.get(module, 1)
        if call is None and calls > 1 and self.seen is None:  # the check splits them; the pass must not mix them
            raise BadInput(f"its module runs {calls} times per forward; record each call as its own layer "
                           f"{name}@1 ... {name}@{calls}")
        info = self.infos[name]
        affine = self.affine.get(name)
        x = inputs[0] if inputs else None
        if affine is not None and out.ndim > 2 and torch.is_tensor(x) and x.numel() < out.numel():
            try:
                return mean_from_input(x, channel_dim_of(x, info.channel_dim), affine, batch=self.rows)
            except BadInput as err:
                raise BadInput(f"its input {tuple(x.shape)}, from which its means are computed: {err}") from err
        return reduce_output(out, channel_dim_of(out, info.channel_dim, info.width), self.spatial, self.tokens,
                             batch=self.rows)

    def _stage(self, name: str, inputs, output) -> None:
        out = first_tensor(output)
        try:
            acts = self._reduce(name, inputs, out)
        except BadInput as err:  # name the layer and how to leave it out
            if self.seen is not None:
                self.seen.setdefault(name, []).append((_shape(out), str(err)))
                return
            raise BadInput(f"layer {name} (output {_shape(out)}): {err}; leave it out with --exclude "
                           f"'{name}' (Python: exclude=[...])") from err
        if self.seen is not None:
            self.seen.setdefault(name, []).append((_shape(out), None))
        self.staged.setdefault(name, []).append(acts)

    def run(self, net: nn.Module, images: torch.Tensor, ids: torch.Tensor) -> None:
        """The forward over a batch (in slices of ``micro_batch`` images); its activations are staged, not folded."""
        self.staged.clear()
        self.ids = ids
        step = self.micro_batch or len(images) or 1
        for start in range(0, len(images), step):
            part = images[start:start + step]
            self.rows = len(part)
            net(part)

    def commit(self) -> None:
        """Fold the staged batch into every layer's state (call inside ``runtime.uninterrupted``)."""
        for name, parts in self.staged.items():
            acts = parts[0] if len(parts) == 1 else torch.cat(parts)
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = LayerState(acts.shape[1], self.k, self.device, self.merge_every,
                                                       self.tie_seed)
            try:
                state.update(acts, self.ids)
            except BadInput as err:
                raise BadInput(f"layer {name}: {err}; leave it out with --exclude '{name}' (Python: "
                               "exclude=[...])") from err
        self.staged.clear()

    def close(self) -> None:
        self.hooks.remove()


def _shape(out) -> object:
    """A layer output's shape, or its type's name when it is not a tensor."""
    return tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
