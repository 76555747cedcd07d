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
  ``stop_at(model, name)`` makes ``model(x)`` return that module's output and stop there.
"""
from __future__ import annotations

import contextlib
import importlib
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


def prepare_model(model: "nn.Module", device: "torch.device", channels_last: bool = True) -> "nn.Module":
    """``model`` on ``device`` in eval mode, channels-last by default (faster convolutions, the same numbers)."""
    import torch

    model = model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


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


def named_modules(model: "nn.Module", names: Iterable[str]) -> dict[str, "nn.Module"]:
    """The modules called ``names`` (in that order); a name that is not a module is an error naming it."""
    modules = dict(model.named_modules())
    names = list(names)
    missing = [n for n in names if n not in modules]
    if missing:
        raise BadInput(f"layer(s) {', '.join(missing)} are not modules of the model; list them with unitlens layers")
    return {n: modules[n] for n in names}


class ForwardHooks:
    """``fn(name, output)`` after every forward of the named modules (``fn(name, inputs, output)`` with
    ``with_inputs``); a non-None return replaces the output.

    Registered on creation, removed by ``remove()`` or at the end of a ``with`` block.
    """

    def __init__(self, model: "nn.Module", names: Iterable[str], fn: Callable[..., Any], with_inputs: bool = False):
        modules = named_modules(model, names)
        self.handles = [module.register_forward_hook(self._hook(name, fn, with_inputs))
                        for name, module in modules.items()]

    @staticmethod
    def _hook(name: str, fn: Callable[..., Any], with_inputs: bool) -> Callable:
        if with_inputs:
            def hook_with_inputs(_module: Any, inputs: Any, output: Any) -> Any:
                return fn(name, inputs, output)
            return hook_with_inputs

        def hook(_module: Any, _inputs: Any, output: Any) -> Any:
            return fn(name, output)
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

    The stop hook is registered at call time, so it runs after every hook others (zennit, CRP) put there.
    """
    module = named_modules(model, [name])[name]

    def forward(*args: Any, **kwargs: Any) -> Any:
        captured = {}

        def stop(_module: Any, _inputs: Any, output: Any) -> None:
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
