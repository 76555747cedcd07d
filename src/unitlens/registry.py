"""``Registry``: the one shape of every named set of plug-ins (model sources, embedding backends, crop modes, basis
kinds, labellers, derived results).

A registry maps names to objects; ``register`` refuses a name twice, ``get`` names the nearest known names for
an unknown one, and ``lazy`` names a module that registers an entry when first asked for (so that a heavy
plug-in is imported only when used)::

    BACKENDS = Registry("embedding backend")

    @BACKENDS.register("offline")
    def load_offline(spec, device): ...

    BACKENDS.get("offline")      # the function
    BACKENDS.names()             # ["offline", ...], sorted
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Generic, TypeVar

from unitlens.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names them in messages: "embedding backend")."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint  # appended to the unknown-name error (how names look: "timm:<name>")
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str, entry: Any = None) -> Any:
        """``register(name, entry)``, or ``@register(name)`` as a decorator; a name already taken is an error."""
        if entry is None:
            def decorate(obj: T) -> T:
                self.add(name, obj)
                return obj

            return decorate
        self.add(name, entry)
        return entry

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry

    def lazy(self, name: str, module: str) -> None:
        """``name`` is registered by importing ``module`` (on first ``get``)."""
        if name in self._entries or name in self._lazy:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._lazy[name] = module

    def names(self) -> list[str]:
        """Every name, the lazy ones included, sorted."""
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name is a ``BadInput`` listing the known ones (closest first)."""
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise BadInput(f"unknown {self.kind} '{name}'{hint} (known: {', '.join(self.names())})"
                           + (f"; {self.hint}" if self.hint else ""))
        return self._entries[name]

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) of every registered entry (lazy ones are imported)."""
        return [(name, self.get(name)) for name in self.names()]

    def values(self) -> list[T]:
        """Every entry, in the order of ``names`` (lazy ones are imported)."""
        return [entry for _, entry in self.items()]
