"""Runtime helpers every step shares: the device, progress bars, prefetching loads, and forward hooks.

This module sits below every package (it imports no other unitlens module), and imports torch and rich
only when a helper needs them, so importing it costs nothing at start-up.

- ``pick_device(device)``: the given device, else CUDA when present, else the CPU.
- ``Progress(description, total)``: a progress bar on stderr with done/total, rate, elapsed and time left.
  Bars opened while another is live join its display (a study's overall bar above a record's bar).
- ``prefetch(items, load, batch_size)``: chunks of items with ``load`` applied in threads, the next chunk
  loading while the caller works on the current one.
- ``lazy_exports(package, names)``: a package's public names, imported from their modules on first use, so
  importing a package (or a light module inside it) does not load torch.
- ``torch_threads(n)``, ``run_jobs(jobs, fn, threads)``: single-threaded torch operations (robust on busy
  cores), parallel over independent jobs instead.
- ``ForwardHooks(model, names, fn)``: ``fn(name, output)`` after each named module (a return value replaces
  the output); ``capture_outputs(model, x, names)`` runs a forward only as far as the deepest named module;
  ``stop_at(model, name)`` makes ``model(x)`` return that module's output and stop there. A layer name
  ``NAME@i`` (``split_call``) is the i-th call of module ``NAME`` in one forward (a module called several times).
- ``prepare_model(model, device, channels_last)``: the model ready to run (channels-last where it allows it;
  ``channels_last_mode(False)`` switches it off for a block); ``on_meta()``: modules built in the block have shapes
  but no memory and no weights.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from unitlens.errors import BadInput

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")
R = TypeVar("R")


# ------------------------------------------------------------------------------------------ lazy re-exports
def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package that re-exports ``names`` (name -> defining module).

    A package's ``__init__`` sets ``__getattr__, __dir__ = lazy_exports(__name__, {...})`` (and imports the
    same names under ``TYPE_CHECKING`` for type checkers): the defining module is imported on first access. A
    package of an optional extra that is not installed is a ``MissingExtra`` error naming the extra.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(names[name])
        except ModuleNotFoundError as err:
            from unitlens.extras import missing_extra

            raise (missing_extra(err) or err) from err
        value = getattr(module, name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__


# ------------------------------------------------------------------------------------------ device
def pick_device(device: Any = None) -> "torch.device":
    """``device`` as a ``torch.device``; None: CUDA when present, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def channels_last_ok(model: "nn.Module") -> bool:
    """Whether ``model`` can take the channels-last memory format: none of its weights or buffers has rank 5 (the
    format is for rank-4 tensors; a Conv3d weight, as in lambda networks, makes the conversion raise)."""
    return all(t.ndim != 5 for t in itertools.chain(model.parameters(), model.buffers()))


_CHANNELS_LAST: contextvars.ContextVar[bool] = contextvars.ContextVar("unitlens_channels_last", default=True)


@contextlib.contextmanager
def channels_last_mode(enabled: bool) -> Iterator[None]:
    """Within the block ``prepare_model`` uses the channels-last memory format (``enabled``) or leaves it off,
    unless its caller says: the switch of the commands that run a model and have no ``channels_last`` option of
    their own (``--channels-last/--no-channels-last``)."""
    token = _CHANNELS_LAST.set(enabled)
    try:
        yield
    finally:
        _CHANNELS_LAST.reset(token)


def prepare_model(model: "nn.Module", device: "torch.device", channels_last: bool | None = None) -> "nn.Module":
    """``model`` on ``device`` in eval mode, channels-last (faster convolutions, the same numbers) where the model
    allows it (``channels_last_ok``); other models run as they are. ``channels_last`` None: as
    ``channels_last_mode`` says (on by default)."""
    import torch

    wanted = _CHANNELS_LAST.get() if channels_last is None else channels_last
    model = model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if wanted and channels_last_ok(model) else model


# in-place operations that only fill or rescale values: weight initialisation, which has nothing to do on meta
_VALUE_FILLS = frozenset({
    "uniform_", "normal_", "trunc_normal_", "erfinv_", "exponential_", "bernoulli_", "log_normal_", "cauchy_",
    "geometric_", "random_", "fill_", "zero_", "copy_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_",
    "clamp_max_", "abs_", "sqrt_", "exp_", "neg_", "masked_fill_", "addcmul_", "addcdiv_", "lerp_", "pow_",
    "fmod_", "floor_", "ceil_", "round_", "sign_",
})


@functools.lru_cache(maxsize=None)
def _skip_fills() -> type:
    from torch import Tensor
    from torch.overrides import TorchFunctionMode

    class SkipFills(TorchFunctionMode):
        """Skips value-only in-place operations on meta tensors (they keep the shape and there are no values)."""

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if getattr(func, "__name__", "") in _VALUE_FILLS and args and isinstance(args[0], Tensor) \
                    and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipFills


# operations whose output has their first input's shape (normalisations, activations): on meta only that is needed
_SAME_SHAPE = frozenset({
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "normalize", "dropout", "softmax",
    "log_softmax", "relu", "relu_", "relu6", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardtanh",
    "leaky_relu", "elu", "sigmoid", "tanh", "erf", "exp", "sqrt", "rsqrt", "neg", "abs", "clamp",
})


# elementwise operations of two operands (broadcast), and their in-place forms (the first operand's shape)
_BROADCAST = frozenset({"add", "sub", "mul", "div", "maximum", "minimum", "__add__", "__radd__", "__sub__", "__rsub__",
                        "__mul__", "__rmul__", "__truediv__", "__rtruediv__"})
_IN_PLACE = frozenset({"add_", "sub_", "mul_", "div_", "__iadd__", "__isub__", "__imul__", "__itruediv__"})


def _reduced_shape(x: Any, args: tuple, kwargs: dict) -> tuple[int, ...]:
    """The shape of ``x.mean(dim, keepdim)`` (all dims when none is given)."""
    dim = kwargs.get("dim", args[0] if args else None)
    keep = bool(kwargs.get("keepdim", args[1] if len(args) > 1 else False))
    dims = range(x.ndim) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    gone = {d % x.ndim for d in dims}
    return tuple(1 if i in gone else n for i, n in enumerate(x.shape) if keep or i not in gone)


def _shape_of(name: str, args: tuple, kwargs: dict) -> Any:
    """The (meta) result of a shape-only operation, or None to run it as it is."""
    import torch

    x = args[0]
    if name in _SAME_SHAPE:
        return torch.empty_like(x)
    if name in _IN_PLACE:
        return x
    if name in _BROADCAST:
        other = args[1] if len(args) > 1 else kwargs["other"]
        if not isinstance(other, torch.Tensor):
            other = torch.tensor(other)
        dtype = torch.result_type(x, other)
        shape = torch.broadcast_shapes(x.shape, other.shape)
        return torch.empty_like(x, dtype=dtype) if shape == x.shape else x.new_empty(shape, dtype=dtype)
    if name == "mean":
        return x.new_empty(_reduced_shape(x, args[1:], kwargs))
    if name == "linear":
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return x.new_empty((*x.shape[:-1], weight.shape[0]))
    if name == "lstm" and len(args) >= 9 and isinstance(args[1], (tuple, list)):  # (input, hx, params, ...)
        h, c = args[1]
        directions = 2 if args[7] else 1
        return x.new_empty((*x.shape[:-1], directions * h.shape[-1])), torch.empty_like(h), torch.empty_like(c)
    return None


@functools.lru_cache(maxsize=None)
def _shapes_only() -> type:
    from torch import Tensor
    from torch.overrides import TorchFunctionMode

    class ShapesOnly(TorchFunctionMode):
        """Normalisations, activations, elementwise arithmetic, means, linear layers and LSTMs on meta tensors give
        an empty tensor of their result's shape directly (meta kernels reach it through many small steps, 1-70 ms
        per call)."""

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if args and isinstance(args[0], Tensor) and args[0].is_meta:
                try:
                    out = _shape_of(getattr(func, "__name__", ""), tuple(args), kwargs)
                except (IndexError, KeyError, TypeError, ValueError):  # an unusual call: let torch answer
                    out = None
                if out is not None:
                    return out
            return func(*args, **kwargs)

    return ShapesOnly


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within the block a forward on meta tensors computes only shapes where torch's meta kernels are slow
    (normalisations, activations, elementwise arithmetic, means, linear layers, LSTMs): a check of a large model's
    layers on meta takes a fraction of a second instead of seconds. Other operations and other devices are
    untouched."""
    with _shapes_only()():
        yield


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Modules built in the block live on the meta device: every shape, no memory, no weights. Their weight
    initialisation is skipped (on meta it has nothing to fill, and its random fills are slow there): listing a
    large model's layers takes a fraction of a second."""
    import torch

    with torch.device("meta"), _skip_fills()():
        yield


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Within the block torch's default generator is seeded with ``seed`` (random-weight models built there are
    the same on every run); the caller's RNG state is restored afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Within the block a Ctrl-C (SIGINT) waits: it is raised as ``KeyboardInterrupt`` when the block ends, so
    a group of updates (a batch folded into every layer's state, and the position that says so) happens whole or
    not at all. Outside the main thread, where signal handlers cannot be set, the block runs as it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[object] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def worker_threads() -> int:
    """Threads for decoding and preprocessing images beside the main work (1 to 4, by the cores there are)."""
    return max(1, min(4, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------ progress
class _Display:
    """The one live rich display all open bars share (rich allows one live display at a time)."""

    progress: Any = None
    open_bars = 0

    @classmethod
    def add(cls, description: str, total: int | None, completed: int, unit: str) -> int:
        if cls.progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            cls.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                    console=Console(stderr=True), transient=False)
            cls.progress.start()
        cls.open_bars += 1
        return cls.progress.add_task(description, total=total, completed=completed, rate="", unit=unit)

    @classmethod
    def remove(cls, task: int) -> None:
        cls.open_bars -= 1
        if cls.open_bars <= 0 and cls.progress is not None:
            cls.progress.stop()
            cls.progress, cls.open_bars = None, 0


class Progress:
    """A progress bar on stderr; a no-op when ``enabled`` is false. Use it as a context manager.

    ``advance(n)`` adds ``n`` done items; the rate counts this run's items only (a resumed run starts at
    ``completed``). ``describe(text)`` changes the description (a study's current entry and step).
    """

    def __init__(self, description: str, total: int | None, enabled: bool = True, completed: int = 0,
                 unit: str = "it"):
        self.enabled = enabled
        self.unit = unit
        self.seen = 0
        self.t0 = time.perf_counter()
        self.task = _Display.add(description, total, completed, unit) if enabled else None

    def advance(self, n: int = 1) -> None:
        if self.task is None:
            return
        self.seen += n
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        _Display.progress.update(self.task, advance=n, rate=f"{rate:,.1f} {self.unit}/s")

    def describe(self, description: str) -> None:
        if self.task is not None:
            _Display.progress.update(self.task, description=description)

    def set_total(self, total: int) -> None:
        if self.task is not None:
            _Display.progress.update(self.task, total=total)

    def close(self) -> None:
        if self.task is not None:
            _Display.remove(self.task)
            self.task = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ prefetching
def prefetch(items: Sequence[T], load: Callable[[T], R], batch_size: int, workers: int | None = None,
             errors: str = "raise") -> Iterator[tuple[list[T], list[R]]]:
    """Yield ``(chunk, [load(item) for item in chunk])`` for consecutive chunks of ``batch_size`` items.

    Threads load the next chunk while the caller works on the current one. ``errors="return"`` puts the
    exception of a failed load in its result's place (the caller skips or reports it); ``"raise"`` raises it.
    """
    if errors not in ("raise", "return"):
        raise BadInput("errors must be 'raise' or 'return'")
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {batch_size}")
    chunks = [list(items[s:s + batch_size]) for s in range(0, len(items), batch_size)]

    def guarded(item: T) -> Any:
        try:
            return load(item)
        except Exception as err:  # handed to the caller, which names the item
            if errors == "raise":
                raise
            return err

    if not chunks:
        return
    with ThreadPoolExecutor(workers or worker_threads()) as pool:
        ahead = [pool.submit(guarded, x) for x in chunks[0]]
        for i, chunk in enumerate(chunks):
            current = ahead
            ahead = [pool.submit(guarded, x) for x in chunks[i + 1]] if i + 1 < len(chunks) else []
            yield chunk, [f.result() for f in current]


def prefetch_chunks(chunks: Sequence[T], load: Callable[[T], R]) -> Iterator[R]:
    """``load(chunk)`` of each chunk in order, the next one loading in a thread meanwhile."""
    if not chunks:
        return
    with ThreadPoolExecutor(1) as pool:
        ahead = [pool.submit(load, chunks[0])]
        for c in range(len(chunks)):
            result = ahead.pop().result()
            if c + 1 < len(chunks):
                ahead.append(pool.submit(load, chunks[c + 1]))
            yield result


# ------------------------------------------------------------------------------------------ CPU threads
@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (process-wide; the previous count is restored after).

    On a machine whose other cores are busy, every multi-threaded torch operation waits for its slowest
    thread: on 2 shared cores a 360k-element ``min`` took 20 ms with 2 threads and 0.08 ms with 1.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_jobs(jobs: Sequence[T], fn: Callable[[T], Any], threads: int | None = None) -> None:
    """``fn(job)`` for every job, on a pool of ``threads`` workers (default: torch's thread count) whose torch
    operations run single-threaded, so a busy core delays one job instead of stalling every operation.

    Jobs are taken in order by whichever worker is free; they must write disjoint results.
    """
    import torch

    threads = max(1, min(threads or torch.get_num_threads(), len(jobs)))
    with torch_threads(1), ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for done in [pool.submit(fn, job) for job in jobs]:
            done.result()


# ------------------------------------------------------------------------------------------ forward hooks
def first_tensor(output: Any) -> Any:
    """A module's output, or its first element when it returns a tuple or list."""
    return output[0] if isinstance(output, (tuple, list)) else output


CALL = "@"  # NAME@i: the i-th call of module NAME in one forward


def split_call(name: str) -> tuple[str, int | None]:
    """``blocks.0.proj@2`` -> (``blocks.0.proj``, 2): the layer that is the 2nd call of a module called several
    times per forward; a plain layer name -> (name, None)."""
    module, sep, call = name.rpartition(CALL)
    if sep and call.isdigit() and int(call) >= 1:
        return module, int(call)
    return name, None


def named_modules(model: "nn.Module", names: Iterable[str]) -> dict[str, "nn.Module"]:
    """The modules of the layers ``names`` (in that order; ``NAME@i`` is module ``NAME``); a name that is not a
    module is an error naming it."""
    modules = dict(model.named_modules())
    names = list(names)
    missing = [n for n in names if split_call(n)[0] not in modules]
    if missing:
        raise BadInput(f"layer(s) {', '.join(missing)} are not modules of the model; list them with unitlens layers")
    return {n: modules[split_call(n)[0]] for n in names}


class ForwardHooks:
    """``fn(name, output)`` after every forward of the named modules (``fn(name, inputs, output)`` with
    ``with_inputs``); a non-None return replaces the output. A name ``NAME@i`` hears only the i-th call of module
    ``NAME`` in each forward of ``model``; a plain name hears every call. ``calls`` counts each hooked module's
    calls in the latest forward.

    Registered on creation, removed by ``remove()`` or at the end of a ``with`` block.
    """

    def __init__(self, model: "nn.Module", names: Iterable[str], fn: Callable[..., Any], with_inputs: bool = False):
        names = list(names)
        modules = named_modules(model, names)
        wanted: dict[str, dict[int | None, str]] = {}  # module -> call (None: every call) -> layer name
        for name in names:
            module, call = split_call(name)
            wanted.setdefault(module, {})[call] = name
        self.calls: dict[str, int] = {}
        self.handles = [model.register_forward_pre_hook(lambda *_: self.calls.clear())]
        self.handles += [modules[next(iter(by_call.values()))].register_forward_hook(
            self._hook(module, by_call, fn, with_inputs)) for module, by_call in wanted.items()]

    def _hook(self, module: str, by_call: dict[int | None, str], fn: Callable[..., Any], with_inputs: bool
              ) -> Callable:
        def hook(_module: Any, inputs: Any, output: Any) -> Any:
            call = self.calls[module] = self.calls.get(module, 0) + 1
            replaced = None
            for key in (None, call):
                name = by_call.get(key)
                if name is not None:
                    result = fn(name, inputs, output) if with_inputs else fn(name, output)
                    if result is not None:
                        output = replaced = result
            return replaced
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "ForwardHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once what was needed has been computed."""


class OutputCapture:
    """Keeps the (first-tensor) outputs of named modules; ``run(x)`` stops the forward once all have run.

    A context manager; ``detach`` keeps detached outputs (the default).
    """

    def __init__(self, model: "nn.Module", names: Iterable[str], stop: bool = True, detach: bool = True):
        self.model = model
        self.names = list(names)
        self.stop = stop
        self.detach = detach
        self.outputs: dict[str, Any] = {}
        self.hooks = ForwardHooks(model, self.names, self._keep)

    def _keep(self, name: str, output: Any) -> None:
        if name not in self.outputs:
            out = first_tensor(output)
            self.outputs[name] = out.detach() if self.detach and hasattr(out, "detach") else out
        if self.stop and len(self.outputs) == len(self.names):
            raise _StopForward

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Outputs of the named modules on this input; the forward runs only as far as it must."""
        self.outputs = {}
        try:
            self.model(*args, **kwargs)
        except _StopForward:
            pass
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise BadInput(f"layer(s) {', '.join(missing)} did not run in the model's forward pass")
        return self.outputs

    def remove(self) -> None:
        self.hooks.remove()

    def __enter__(self) -> "OutputCapture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def capture_outputs(model: "nn.Module", x: Any, names: Iterable[str]) -> dict[str, Any]:
    """The detached outputs of ``names`` on input ``x``; the forward stops after the last of them."""
    with OutputCapture(model, names) as capture:
        return capture.run(x)


@contextlib.contextmanager
def stop_at(model: "nn.Module", name: str) -> Iterator["nn.Module"]:
    """Within the block, ``model(...)`` runs its forward only up to module ``name`` and returns its output.

    The stop hook is registered at call time, so it runs after every hook others (zennit, CRP) put there. For
    ``NAME@i`` the forward stops after the i-th call of module ``NAME``.
    """
    module = named_modules(model, [name])[name]
    call = split_call(name)[1] or 1

    def forward(*args: Any, **kwargs: Any) -> Any:
        captured: dict[str, Any] = {}
        seen = [0]

        def stop(_module: Any, _inputs: Any, output: Any) -> None:
            seen[0] += 1
            if seen[0] == call:
                captured["out"] = output
                raise _StopForward

        handle = module.register_forward_hook(stop)
        try:
            type(model).forward(model, *args, **kwargs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured.get("out")

    model.forward = forward
    try:
        yield model
    finally:
        del model.forward
