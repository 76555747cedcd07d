"""One options dataclass per step: every option's type, default, check and help text in one place.

A step's options are a frozen dataclass deriving from ``Options`` whose fields are made with ``option()``::

    @dataclass(frozen=True)
    class RecordOptions(Options):
        k: int = option(200, "Exemplars kept per unit and direction.", min=1)
        spatial: str = option("mean", "Reduce (B,C,H,W) maps over space.", choices=("mean", "max"))

From that one definition:

- the Python function takes it (``record(..., options=RecordOptions(k=50))``) or keyword arguments for
  convenience (``record(..., k=50)``): ``takes_options`` merges both, and gives the function a signature and a
  docstring section that list every option (Jupyter's ``?`` and ``help()`` show them);
- the command line's options are generated from it (``unitlens.cli.options``), with the same defaults and help;
- study files are checked against it (``from_mapping``: unknown keys name the nearest field, wrong types and
  values are refused before any work);
- the atlas's manifest stores it (``as_dict``), and ``from_mapping`` reads it back.

Every field is checked when an instance is made: its type (``int`` fields refuse ``True`` and ``1.5``; ``float``
fields take integers; ``tuple[str, ...]`` fields take a list or a comma-separated string), its ``choices``, its
``min``/``max``, and a field's own ``check``; ``Options.validate`` adds checks across fields. A failed check is a
``BadInput`` that names the option both ways (``batch_size (--batch-size)``; on the command line only the flag).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, Union

from unitlens.errors import BadInput

T = TypeVar("T", bound="Options")
F = TypeVar("F", bound=Callable[..., Any])

NO_DEFAULT: Any = dataclasses.MISSING


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None, min: float | None = None,
           max: float | None = None, check: Callable[[Any], str | None] | None = None, flag: str | None = None,
           cli: bool = True, metavar: str | None = None, convert: Callable[[Any], Any] | None = None) -> Any:
    """A field of an ``Options`` dataclass.

    Parameters
    ----------
    default
        The default value (immutable: use a tuple for lists).
    help
        One or two sentences, shown by ``--help``, in the docstring of the functions that take the options,
        and in the docs.
    choices
        The allowed values, if the option is one of a fixed set.
    min, max
        Inclusive bounds for numbers.
    check
        ``check(value) -> message or None``: a further check of the value alone (cross-field checks go in
        ``Options.validate``).
    flag
        The command-line flag when it is not ``--field-name`` (``"--workers"`` for ``num_workers``).
    cli
        False for options that only make sense from Python (a callable, a tensor): no command-line option.
    metavar
        How ``--help`` shows the value.
    convert
        Applied to a value (not None) before it is checked: ``str`` for a device, so that ``torch.device("cuda")``
        is taken as ``"cuda"``.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "min": min, "max": max,
            "check": check, "flag": flag, "cli": cli, "metavar": metavar, "convert": convert}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """What one option is: name, resolved type, default, help, choices, bounds and flag."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    flag: str = ""
    cli: bool = True
    metavar: str | None = None
    check: Callable[[Any], str | None] | None = None
    convert: Callable[[Any], Any] | None = None

    @property
    def base(self) -> Any:
        """The type without ``None`` (``int | None`` -> ``int``)."""
        return _without_none(self.type)

    @property
    def optional(self) -> bool:
        return _allows_none(self.type)

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.base) is tuple


class Options:
    """Base of every step's options dataclass (see the module docstring); subclasses are frozen dataclasses."""

    def __post_init__(self) -> None:
        for spec in self.specs():
            shown = f"{spec.name} ({flag_of(spec)})" if spec.cli else spec.name
            value = check_value(spec, getattr(self, spec.name), shown)
            object.__setattr__(self, spec.name, value)
        self.validate()

    def validate(self) -> None:
        """Checks across fields; raise ``BadInput`` naming the options involved. Nothing by default."""

    @classmethod
    def specs(cls) -> list[OptionSpec]:
        """Every option of the class, in field order."""
        return list(_specs(cls))

    @classmethod
    def spec(cls, name: str) -> OptionSpec:
        for item in _specs(cls):
            if item.name == name:
                return item
        raise KeyError(name)

    @classmethod
    def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
        """Options from a mapping (a study file's table, a manifest): unknown keys are refused, naming the closest
        option; ``where`` prefixes every message (``"study.toml [record]"``)."""
        refuse_unknown(data, [s.name for s in _specs(cls)], where)
        try:
            return cls(**dict(data))
        except BadInput as err:
            raise BadInput(f"{where}: {err}" if where else str(err)) from None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples) in field order, for JSON and TOML."""
        return {s.name: list(v) if isinstance(v := getattr(self, s.name), tuple) else v for s in _specs(type(self))}

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes``; unknown names are refused like ``from_mapping``."""
        if not changes:
            return self
        merged = {**{s.name: getattr(self, s.name) for s in _specs(type(self))}, **changes}
        return type(self).from_mapping(merged)

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults (for short summaries)."""
        return {s.name: getattr(self, s.name) for s in _specs(type(self)) if getattr(self, s.name) != s.default}

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td><code>{s.name}</code></td><td>{getattr(self, s.name)!r}</td>"
                       f"<td>{s.help}</td></tr>" for s in _specs(type(self)))
        return (f"<table><caption>{type(self).__name__}</caption><tr><th>option</th><th>value</th>"
                f"<th>what it does</th></tr>{rows}</table>")


def refuse_unknown(keys: Iterable[Any], known: Sequence[str], where: str = "") -> None:
    """A ``BadInput`` for the first of ``keys`` that is not one of the ``known`` options, naming the closest ones
    and all of them; ``where`` prefixes the message."""
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise BadInput(f"{where + ': ' if where else ''}unknown option '{key}'{hint} "
                           f"(the options are: {', '.join(known)})")


def flag_of(spec: OptionSpec) -> str:
    """The command-line flag of an option: its own, or ``--`` and the name with dashes."""
    return spec.flag or "--" + spec.name.replace("_", "-")


_SPECS: dict[type, tuple[OptionSpec, ...]] = {}


def _specs(cls: type) -> tuple[OptionSpec, ...]:
    if cls not in _SPECS:
        _SPECS[cls] = _read_specs(cls)
    return _SPECS[cls]


def _read_specs(cls: type) -> tuple[OptionSpec, ...]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not an options dataclass")
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    out = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not made with unitlens.options.option()")
        meta = f.metadata
        out.append(OptionSpec(f.name, hints[f.name], f.default, meta["help"], meta["choices"], meta["min"],
                              meta["max"], meta["flag"] or "", meta["cli"], meta["metavar"], meta["check"],
                              meta["convert"]))
    return tuple(out)


def _without_none(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return rest[0] if len(rest) == 1 else Union[tuple(rest)]
    return tp


def _allows_none(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_value(spec: OptionSpec, value: Any, shown: str) -> Any:
    """``value`` checked against the option (type, choices, bounds, own check) and brought to its type; a
    ``BadInput`` names the option as ``shown``."""
    if value is None:
        if spec.optional:
            return None
        raise BadInput(f"{shown} needs a value")
    if spec.convert is not None:
        value = spec.convert(value)
    base = spec.base
    if typing.get_origin(base) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise BadInput(f"{shown} must be a list of strings, got {value!r}")
        value = tuple(value)
        bad = [v for v in value if spec.choices is not None and v not in spec.choices]
        if bad:
            allowed = ", ".join(map(str, spec.choices or ()))
            raise BadInput(f"{shown}: unknown value(s) {', '.join(bad)}; choose from {allowed}")
    elif base is bool:
        if not isinstance(value, bool):
            raise BadInput(f"{shown} must be true or false, got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise BadInput(f"{shown} must be an integer, got {value!r}")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{shown} must be a number, got {value!r}")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            raise BadInput(f"{shown} must be a string, got {value!r}")
    if spec.choices is not None and not isinstance(value, tuple) and value not in spec.choices:
        raise BadInput(f"{shown} must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if spec.min is not None and value < spec.min:
        raise BadInput(f"{shown} must be at least {spec.min:g}, got {value}")
    if spec.max is not None and value > spec.max:
        raise BadInput(f"{shown} must be at most {spec.max:g}, got {value}")
    if spec.check is not None and (message := spec.check(value)):
        raise BadInput(f"{shown} {message}")
    return value


def describe_rows(cls: type[Options]) -> list[dict[str, str]]:
    """One row per option (name, flag, type, default, help) for docs tables."""
    return [{"name": s.name, "flag": flag_of(s) if s.cli else "", "type": _type_name(s.type),
             "default": repr(list(s.default)) if isinstance(s.default, tuple) else repr(s.default),
             "help": s.help + (f" One of: {', '.join(map(str, s.choices))}." if s.choices else "")}
            for s in _specs(cls)]


def describe(cls: type[Options], skip: Sequence[str] = ()) -> str:
    """A numpydoc ``Options`` section of the class's fields but ``skip`` (appended to the docstrings of the
    functions that take them)."""
    lines = ["Options", "-------",
             f"Keyword arguments, or ``options={cls.__name__}(...)`` (keyword arguments override its fields):", ""]
    for s in _specs(cls):
        if s.name in skip:
            continue
        lines.append(f"{s.name} : {_type_name(s.type)}, default {s.default!r}")
        lines.append(f"    {s.help}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "sequence of str"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def takes_options(cls: type[Options], skip: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorate a function whose parameter ``options`` is a ``cls``: callers may also pass any of its fields as
    keyword arguments (they override ``options``). The function's signature and docstring list every option but
    those in ``skip`` (fields the function sets itself, such as the backend of a ``Lens``: not keywords).
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        if "options" not in sig.parameters:
            raise TypeError(f"{fn.__qualname__} has no parameter 'options'")
        names = {s.name for s in _specs(cls)} - set(skip)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in names and k not in sig.parameters}
            bound = sig.bind_partial(*args, **kwargs)
            given = bound.arguments.get("options")
            if given is not None and not isinstance(given, cls):
                raise BadInput(f"options must be a {cls.__name__}, got {type(given).__name__}")
            base = given if given is not None else cls()
            bound.arguments["options"] = base.replace(**overrides) if overrides else base
            return fn(*bound.args, **bound.kwargs)

        params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in params}
        extra = [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=s.default, annotation=s.type)
                 for s in _specs(cls) if s.name not in taken and s.name in names]
        positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        wrapper.__signature__ = sig.replace(parameters=positional + keyword + extra)  # type: ignore[attr-defined]
        wrapper.__doc__ = (inspect.cleandoc(fn.__doc__ or "") + "\n\n" + describe(cls, skip)).strip()
        wrapper.options_class = cls  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
