"""``unitlens.registry.Registry``: register, names, get, lazy entries, duplicates refused."""
from __future__ import annotations

import re
import sys
from pathlib import Path

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


# ------------------------------------------------------------------ the registries of the package, entry by entry
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _backend_names() -> list[str]:
    from unitlens.backends import BACKENDS

    return [n for n in BACKENDS.names() if not n.endswith("test") and "test-" not in n]  # leave tests' own out


def _documented_backends() -> set[str]:
    """Backend names in the first column of the MIS guide's backend table (`a:<spec>`, `lpips-alex\\|vgg`)."""
    names: set[str] = set()
    for row in (DOCS / "guide" / "mis.md").read_text().splitlines():
        if not row.startswith("| `"):
            continue
        for span in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            base = re.split(r"[:\[]", span)[0]
            first, *others = base.split("\\|")
            names.add(first)
            names.update(first.rsplit("-", 1)[0] + "-" + other for other in others)
    return names


@pytest.mark.parametrize("name", _backend_names())
def test_every_embedding_backend_is_documented_and_builds_from_its_name(name):
    from unitlens.backends import BACKENDS

    assert name in _documented_backends(), f"{name} is missing from the backend table of the MIS guide"
    assert callable(BACKENDS.get(name))


@pytest.mark.parametrize("kind", sorted(set(__import__("unitlens.basis.defaults", fromlist=["KINDS"]).KINDS)))
def test_every_basis_kind_has_a_fitter_and_a_page(kind):
    from unitlens.basis.kinds import FITTERS

    assert kind in FITTERS or kind == "file"  # "file" is a user's matrix, loaded, not fitted
    assert f"`{kind}`" in (DOCS / "guide" / "bases.md").read_text() or kind in (DOCS / "guide" / "bases.md").read_text()


@pytest.mark.parametrize("source", __import__("unitlens.zoo.factory", fromlist=["SOURCES"]).SOURCES.names())
def test_every_model_source_loads_a_model_by_its_names(source):
    """Each source builds a real architecture on the meta device from a name of its own form, and the model
    guide documents it."""
    from unitlens.zoo.factory import load_model

    name = {"offline": "efficientnet_lite0", "timm": "timm:resnet18", "torchvision": "torchvision:resnet18"}[source]
    loaded = load_model(name, meta=True)
    assert loaded.meta and sum(p.numel() for p in loaded.model.parameters()) > 1_000_000
    assert f"`{source}:<name>`" in (DOCS / "guide" / "command-line.md").read_text() or source == "offline"


@pytest.mark.parametrize("name", __import__("unitlens.atlas.layout", fromlist=["DERIVED"]).DERIVED.names())
def test_every_derived_result_is_specified_in_the_atlas_format(name):
    """Every result a step adds to an atlas has its place in the format specification, by its path."""
    from unitlens.atlas.layout import DERIVED

    entry = DERIVED.get(name)
    assert entry.name == name and entry.depends_on in ("exemplars", "images", "content")
    assert entry.path in (DOCS / "formats" / "atlas.md").read_text(), f"{entry.path} is missing from the atlas format"


@pytest.mark.parametrize("mode", __import__("unitlens.lens.crops", fromlist=["CROP_MODES"]).CROP_MODES.names())
def test_every_crop_mode_crops_and_is_documented(mode):
    """Each crop mode resolves to its function (the lazy relevance mode by importing its module) and the lens
    guide names it; an unknown mode names the known ones."""
    from unitlens.errors import BadInput
    from unitlens.lens.crops import CROP_MODES

    assert callable(CROP_MODES.get(mode))
    assert f"`{mode}`" in (DOCS / "guide" / "lens.md").read_text(), f"crop mode {mode} is not in the lens guide"
    with pytest.raises(BadInput, match=f"unknown crop mode '{mode}x'.*known: .*{mode}"):
        CROP_MODES.get(mode + "x")
