"""``unitlens.registry.Registry``: register, names, get, lazy entries, duplicates refused."""
from __future__ import annotations

import sys

import pytest

from unitlens.errors import BadInput
from unitlens.registry import Registry


def test_register_get_and_names():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)

    @reg.register("green")
    def green() -> int:
        return 2

    assert reg.get("red") == 1 and reg.get("green") is green and reg.names() == ["green", "red"]
    assert "red" in reg and "blue" not in reg


def test_a_name_twice_is_refused():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.register("red", 2)
    reg.lazy("blue", "nowhere")
    with pytest.raises(ValueError, match="twice"):
        reg.lazy("blue", "elsewhere")


def test_unknown_names_list_the_closest_and_the_hint():
    reg: Registry[int] = Registry("colour", hint="colours are lower case")
    for i, name in enumerate(["red", "green", "grey"]):
        reg.register(name, i)
    with pytest.raises(BadInput, match=r"unknown colour 'gren'; did you mean 'green' or 'grey'\? "
                                       r"\(known: green, grey, red\); colours are lower case"):
        reg.get("gren")


def test_lazy_entries_are_imported_on_first_use(monkeypatch):
    reg: Registry[str] = Registry("colour")
    imported = []

    def fake_import(name):
        imported.append(name)
        reg.register("blue", "registered on import")

    monkeypatch.setattr("unitlens.registry.importlib.import_module", fake_import)
    reg.lazy("blue", "fake_colour_plugin")
    assert reg.names() == ["blue"] and not imported
    assert reg.get("blue") == "registered on import" and imported == ["fake_colour_plugin"]
    assert reg.get("blue") == "registered on import" and imported == ["fake_colour_plugin"]
    assert "fake_colour_plugin" not in sys.modules
