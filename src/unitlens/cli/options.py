"""Command-line options generated from the steps' options dataclasses (``unitlens.options``).

A command declares which options it takes by a parameter annotated with an ``Options`` class::

    @app.command("record")
    @options_command
    def record(data: str = typer.Option(...), fmt: str = FORMAT, *, options: RecordOptions,
               model: ModelOptions) -> None: ...

``options_command`` replaces each such parameter by one ``typer`` option per field of the class (its flag, default
and help, taken from the field; ``only``/``skip`` narrow the fields), checks every value with the field's own
check (an error names the flag and exits with status 2, like every other error), and calls the command with
the built instance. So an option's default and help are written once, in the dataclass.
"""
from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

import typer

from unitlens.cli.common import failing_cleanly
from unitlens.options import Options, OptionSpec, check_value, flag_of
from unitlens.zoo.options import channels_last_option

F = typing.TypeVar("F", bound=Callable[..., Any])


def cli_flags(spec: OptionSpec) -> tuple[str, ...]:
    """The flag declarations of an option (``--x/--no-x`` for a switch that has no flag of its own)."""
    flag = flag_of(spec)
    if spec.base is bool and "/" not in flag and not spec.flag:
        return (f"{flag}/--no-{flag[2:]}",)
    return (flag,)


def _annotation(spec: OptionSpec) -> Any:
    base = spec.base
    if base is bool:
        return Optional[bool] if spec.optional else bool
    if base in (int, float):
        return Optional[base] if spec.optional else base
    return Optional[str]  # strings, lists (comma-separated) and paths


def _default(spec: OptionSpec) -> Any:
    if isinstance(spec.default, tuple):
        return ",".join(spec.default)
    return spec.default


def _metavar(spec: OptionSpec) -> str | None:
    if spec.metavar:
        return spec.metavar
    if spec.choices is not None and not spec.is_list:
        return "|".join(map(str, spec.choices))
    return None


def cli_parameters(cls: type[Options], only: Iterable[str] | None = None,
                   skip: Iterable[str] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per command-line field of ``cls``, with its ``typer.Option``."""
    chosen = set(only) if only is not None else None
    out = []
    for spec in cls.specs():
        if not spec.cli or spec.name in skip or (chosen is not None and spec.name not in chosen):
            continue
        help_text = spec.help + (f" Choices: {', '.join(spec.choices)}." if spec.is_list and spec.choices else "")
        opt = typer.Option(_default(spec), *cli_flags(spec), help=help_text, metavar=_metavar(spec),
                           show_default=spec.default is not None and spec.default != ())
        out.append(inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                     annotation=_annotation(spec)))
    return out


def build(cls: type[Options], values: dict[str, Any]) -> Options:
    """The options from command-line values: each checked under its flag first, then the whole (cross-field)."""
    for spec in cls.specs():
        if spec.name in values:
            values[spec.name] = check_value(spec, values[spec.name], flag_of(spec))
    return cls(**values)


def options_command(fn: F | None = None, *, only: dict[str, Iterable[str]] | None = None,
                    skip: dict[str, Iterable[str]] | None = None) -> Any:
    """Decorate a typer command: every parameter annotated with an ``Options`` class becomes that class's
    options (``only``/``skip``: parameter name -> the fields to take / leave out)."""

    def decorate(fn: F) -> F:
        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
        groups: dict[str, type[Options]] = {}
        kept: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            tp = hints.get(p.name)
            if isinstance(tp, type) and issubclass(tp, Options):
                groups[p.name] = tp
            else:
                kept.append(p.replace(annotation=tp if tp is not None else p.annotation))
        generated: dict[str, list[inspect.Parameter]] = {
            name: cli_parameters(cls, (only or {}).get(name), (skip or {}).get(name, ()))
            for name, cls in groups.items()}
        names = [p.name for ps in generated.values() for p in ps] + [p.name for p in kept]
        clash = {n for n in names if names.count(n) > 1}
        if clash:
            raise TypeError(f"{fn.__qualname__}: option names generated twice: {sorted(clash)}")

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            with failing_cleanly():
                built = {name: build(cls, {p.name: kwargs.pop(p.name) for p in generated[name]})
                         for name, cls in groups.items()}
            return fn(**kwargs, **built)

        positional = [p for p in kept if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept if p not in positional]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional]
        params += keyword + [p for ps in generated.values() for p in ps]
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.options_groups = groups  # type: ignore[attr-defined]
        del command.__wrapped__  # typer reads the signature above, not the original's
        return command  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate



@dataclass(frozen=True)
class ChannelsLast(Options):
    """The record pass's ``channels_last`` option alone, for commands that run a model without ``RecordOptions``."""

    channels_last: bool = channels_last_option()


def runs_model(fn: F) -> F:
    """Decorate a typer command that runs a model but takes no ``RecordOptions``: it gets the record pass's
    ``--channels-last/--no-channels-last`` (same flag, default and help: ``ChannelsLast``), and ``prepare_model``
    follows it for the whole command (``runtime.channels_last_mode``)."""
    from unitlens.runtime import channels_last_mode

    (switch,) = cli_parameters(ChannelsLast)
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def command(*args: Any, channels_last: bool, **kwargs: Any) -> Any:  # typer always passes it
        with channels_last_mode(channels_last):
            return fn(*args, **kwargs)

    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()] + [switch]
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    groups = {**getattr(fn, "options_groups", {}), "channels_last": ChannelsLast}
    command.options_groups = groups  # type: ignore[attr-defined]
    if hasattr(command, "__wrapped__"):
        del command.__wrapped__  # typer reads the signature above
    return command  # type: ignore[return-value]
