"""``check_layers(model, layers)``: one small forward through the record pass's own hooks, before any image of the
dataset is read, that finds every layer the pass could not record, all at once.

The forward runs on two synthetic images of the model's input size (on the meta device for a model built without
weights, ``load_model(meta=True)``: shapes only, no memory). Per selected layer it finds:

- a module that never runs in the forward (its weight used functionally, as BEiT's ``attn.qkv``): left out;
- a module that runs several times per forward (CoaT's shared ``cpe1.proj``): each call becomes its own layer
  ``NAME@1``, ``NAME@2``, ... in call order (``repeated="split"``), or the module is left out (``"skip"``);
- an output with one row for the whole batch (XCiT's ``pos_embed.token_projection``): it does not depend on the
  image, so its units are constant by definition: left out;
- any other output that cannot be reduced to (batch, channels): ``LayerCheck.unrecordable``, an error for the pass.

In a model with repeated modules, depth follows the call order: the analysable layers are counted in the order the
forward runs them, each call of a repeated module one layer (``zoo.units.place_in_call_order``).
"""
from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch

from unitlens.errors import BadInput
from unitlens.recording.defaults import REPEATED_SPLIT
from unitlens.recording.recorder import Recorder
from unitlens.runtime import CALL, ForwardHooks, shapes_only, split_call
from unitlens.zoo.factory import LoadedModel, load_model
from unitlens.zoo.units import LayerInfo, analysable_names, place_in_call_order

CHECK_IMAGES = 2  # synthetic images of the check's forward


@dataclass
class LayerCheck:
    """What the check found: the layers the pass records, and every layer it leaves out or cannot record."""

    layers: list[LayerInfo]  # to record, in order (calls of repeated modules split when ``split``)
    never_run: list[str] = field(default_factory=list)  # modules that never ran in the forward
    repeated: dict[str, int] = field(default_factory=dict)  # module -> its calls per forward
    split: bool = True  # repeated modules recorded call by call (else left out)
    constant: list[str] = field(default_factory=list)  # outputs with one row for the whole batch
    unrecordable: dict[str, str] = field(default_factory=dict)  # layer -> why its output cannot be reduced
    on_meta: bool = False  # the forward ran on the meta device

    @property
    def left_out(self) -> list[str]:
        """Every selected layer the pass leaves out (never run, constant, repeated and not split)."""
        return self.never_run + self.constant + ([] if self.split else list(self.repeated))

    def summary(self) -> str:
        """One line: what is left out or split (empty when every layer records as it is)."""
        parts = []
        if self.never_run:
            parts.append(f"never run: {_listed(self.never_run)}")
        if self.repeated:
            what = "split into one layer per call" if self.split else "left out"
            parts.append(f"run several times per forward ({what}): "
                         + _listed([f"{m} x{n}" for m, n in self.repeated.items()]))
        if self.constant:
            parts.append(f"image-independent (constant): {_listed(self.constant)}")
        if self.unrecordable:
            parts.append(f"cannot be reduced to (batch, channels): {_listed(list(self.unrecordable))}")
        return "; ".join(parts)

    def error(self) -> BadInput | None:
        """The error the pass raises for layers it cannot record (None: there are none)."""
        if not self.unrecordable:
            return None
        names = list(self.unrecordable)
        detail = "; ".join(f"{name}: {why}" for name, why in self.unrecordable.items())
        return BadInput(f"{len(names)} layer(s) cannot be recorded ({detail}). Leave them out with --exclude "
                        f"'{','.join(names)}' (Python: exclude={names!r})")

    def warn(self) -> None:
        """One warning listing every layer left out (none when nothing is)."""
        left = [p for p in (("never run in the forward", self.never_run),
                            ("image-independent outputs (constant units)", self.constant),
                            ("run several times per forward (repeated='skip')",
                             [] if self.split else list(self.repeated))) if p[1]]
        if left:
            warnings.warn("left out of the record: " + "; ".join(f"{len(n)} {what}: {', '.join(n)}"
                                                                  for what, n in left), stacklevel=3)


def _listed(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def check_layers(model: LoadedModel, layers: Sequence[LayerInfo], repeated: str = REPEATED_SPLIT,
                 spatial: str = "mean", tokens: str = "mean") -> LayerCheck:
    """Run ``model`` once through the record pass's hooks on ``layers`` and sort out what it cannot record.

    ``repeated``: ``"split"`` records each call of a module that runs several times per forward as its own layer
    ``NAME@i``; ``"skip"`` leaves such modules out. A model built on the meta device (``load_model(meta=True)``)
    runs there; if an operation of its forward has no meta implementation, the check builds it again with random
    weights and runs it on the CPU.
    """
    layers = list(layers)
    try:
        seen, trace = _probe(model, layers, spatial, tokens)
    except Exception as err:  # noqa: BLE001 - a forward fails in many ways; a meta one for want of a meta kernel
        if model.meta:
            real = load_model(model.name, pretrained=False, **model.options)
            return replace(check_layers(real, layers, repeated, spatial, tokens), on_meta=False)
        raise BadInput(f"model '{model.name}' fails on {CHECK_IMAGES} synthetic inputs of its input size "
                       f"{model.input_size} ({type(err).__name__}: {err})") from err
    check = LayerCheck([], split=repeated == REPEATED_SPLIT, on_meta=model.meta)
    kept: list[LayerInfo] = []
    for info in layers:
        calls = seen.get(info.name, [])
        if not calls:
            check.never_run.append(info.name)
            continue
        if len(calls) > 1:
            check.repeated[info.name] = len(calls)
            if not check.split:
                continue
        for i, (shape, why) in enumerate(calls, start=1):
            name = info.name if len(calls) == 1 else f"{info.name}{CALL}{i}"
            if why is None:
                kept.append(replace(info, name=name))
            elif isinstance(shape, tuple) and len(shape) >= 2 and shape[0] == 1:
                check.constant.append(name)
            else:
                check.unrecordable[name] = f"output {shape}: {why}"
    repeats = any(split_call(name)[1] is not None for name in trace)  # the model's, selected or not
    check.layers = place_in_call_order(kept, trace) if repeats else kept
    return check


def _probe(model: LoadedModel, layers: list[LayerInfo], spatial: str, tokens: str
           ) -> tuple[dict[str, list[tuple[object, str | None]]], list[str]]:
    """(per layer, each call's output shape and reduction error; the analysable modules' calls in forward order)."""
    net = model.model
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if device.type == "meta":
        x = torch.empty(CHECK_IMAGES, *model.input_size, device=device, dtype=dtype)
    else:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(CHECK_IMAGES, *model.input_size, generator=gen).to(device=device, dtype=dtype)
    trace: list[str] = []
    recorder = Recorder(net, layers, 1, spatial, tokens, device, probe=True)
    everything = analysable_names(net)
    try:
        with ForwardHooks(net, everything, lambda name, _out: trace.append(name)) as counting, \
                torch.inference_mode(), shapes_only() if device.type == "meta" else nullcontext():
            recorder.run(net, x, torch.arange(CHECK_IMAGES))
            calls = dict(counting.calls)
    finally:
        recorder.close()
    numbered: dict[str, int] = {}
    order = []
    for name in trace:  # every call of a repeated module is a layer of its own
        numbered[name] = numbered.get(name, 0) + 1
        order.append(f"{name}{CALL}{numbered[name]}" if calls.get(name, 1) > 1 else name)
    return recorder.seen or {}, order


def _included(name: str, include: Sequence[str]) -> bool:
    """Whether layer ``name`` is wanted: a module's only call always (its module was selected); a call ``NAME@i``
    when a pattern matches it, or a plain pattern matches its module (all its calls)."""
    module, call = split_call(name)
    return call is None or any(fnmatch.fnmatchcase(name, p) or (split_call(p)[1] is None and
                                                                 fnmatch.fnmatchcase(module, p)) for p in include)


def explicit_names(patterns: Iterable[str] | None) -> set[str]:
    """The layer names among ``patterns`` that are names, not globs."""
    return {p for p in patterns or () if not any(c in p for c in "*?[")}


def settle(check: LayerCheck, named: set[str], include: Sequence[str] | None = None,
           exclude: Sequence[str] | None = None) -> list[LayerInfo]:
    """The layers a pass records after ``check``: an error for layers it cannot record and for a layer the user
    ``named`` that never runs (or a call ``NAME@i`` a module does not make); one warning listing the others left
    out. ``include`` / ``exclude``: name patterns, also matched against ``NAME@i``."""
    error = check.error()
    if error is not None:
        raise error
    never = sorted(named & set(check.never_run))
    if never:
        raise BadInput(f"layer(s) {', '.join(never)} never run in the model's forward (their weights are used "
                       "another way), so no hook sees them; choose other layers (unitlens layers lists them)")
    layers = check.layers
    calls = [p for p in include or () if split_call(p)[1] is not None]  # NAME@i patterns pick calls
    if calls:
        layers = [info for info in layers if _included(info.name, include or ())]
        missing = sorted(explicit_names(calls) - {info.name for info in layers})
        if missing:
            raise BadInput("layer(s) " + ", ".join(
                f"{p} (module {split_call(p)[0]} runs {check.repeated.get(split_call(p)[0], 1)} time(s) per "
                "forward)" for p in missing) + " do not exist; unitlens layers lists the calls of repeated modules")
    if exclude:
        layers = [info for info in layers if not any(fnmatch.fnmatchcase(info.name, p) for p in exclude)]
    if not layers:
        raise BadInput("no layer left to record after the check (" + check.summary() + ")")
    check.warn()
    return layers
