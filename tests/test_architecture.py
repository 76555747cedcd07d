"""The shape of the codebase: which package may import which, no private names across packages, typer only in
the CLI, no module named like a function it sits beside, and a start-up that loads no torch.

The layer table below is the one docs/architecture.md draws; a package may import its own modules and the
packages listed for it (lower layers), never a higher one.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unitlens"

# package -> the unitlens packages it may import (besides itself); top-level modules count as packages
BOTTOM = {"errors", "runtime", "options", "extras", "registry", "notebook"}
ALLOWED = {
    "errors": set(),
    "notebook": set(),
    "registry": {"errors"},
    "extras": {"errors"},
    "runtime": {"errors", "extras"},
    "options": {"errors"},
    "zoo": BOTTOM,
    "data": BOTTOM,
    "atlas": BOTTOM | {"zoo", "data"},
    "report": BOTTOM | {"atlas"},
    "backends": BOTTOM | {"zoo", "data", "atlas"},
    "recording": BOTTOM | {"zoo", "data", "atlas"},
    "mis": BOTTOM | {"zoo", "data", "atlas", "backends", "report"},
    "lens": BOTTOM | {"zoo", "data", "atlas", "backends", "report"},
    "relevance": BOTTOM | {"zoo", "data", "atlas", "backends", "report", "lens"},
}
MIDDLE = set(ALLOWED)
ALLOWED.update({
    "basis": MIDDLE | {"mis", "lens"},
    "probe": MIDDLE | {"mis", "lens"},
    "featviz": MIDDLE | {"mis", "lens", "basis"},
})
ALLOWED.update({
    "audit": set(ALLOWED) | {"mis", "lens", "relevance"},
    "study": set(ALLOWED) | {"mis", "lens", "relevance", "basis", "probe"},
})
ALLOWED["explorer"] = set(ALLOWED) | {"audit", "study", "mis", "lens", "relevance", "basis", "probe"}
ALLOWED["cli"] = set(ALLOWED) | {"explorer"}
ALLOWED["__main__"] = {"cli"}  # python -m unitlens
ALLOWED["__init__"] = set(ALLOWED) - {"cli", "__main__"}  # the public API: lazy re-exports of every step


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import in the file, function bodies included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def test_every_package_is_in_the_layer_table():
    packages = {_package(p) for p in _modules()}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to the layer table (and the docs)"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in _modules():
        own = _package(path)
        for module, _, line in _imports(path):
            parts = module.split(".")
            if parts[0] != "unitlens" or len(parts) < 2:
                continue
            target = parts[1]
            if target != own and target not in ALLOWED[own]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({own}) imports {module}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_private_names_across_packages():
    bad = []
    for path in _modules():
        own = _package(path)
        for module, names, line in _imports(path):
            parts = module.split(".")
            if parts[0] != "unitlens" or len(parts) < 2 or parts[1] == own:
                continue
            private = [p for p in parts[1:] if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {module} {names}")
    assert not bad, "private names used across packages:\n" + "\n".join(bad)


def test_typer_only_in_the_cli():
    bad = [f"{p.relative_to(SRC)}:{line}" for p in _modules() if _package(p) != "cli"
           for module, _, line in _imports(p) if module.split(".")[0] == "typer"]
    assert not bad, f"typer outside unitlens.cli: {bad}"


def _exported(init: Path) -> list[str]:
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def test_no_module_is_named_like_a_name_its_package_exports():
    bad = []
    for init in SRC.rglob("__init__.py"):
        package = init.parent
        modules = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir() if p.is_dir()}
        bad += [f"{package.relative_to(SRC)}.{name}" for name in _exported(init) if name in modules]
    assert not bad, f"these names are both a module and an exported function or class: {bad}"


def test_help_and_the_cli_import_no_heavy_library():
    code = ("import sys, unitlens, unitlens.cli; "
            "print(','.join(m for m in ('torch', 'pandas', 'numpy', 'matplotlib', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the CLI loaded {out.stdout.strip()}"


@pytest.mark.parametrize("name", ["Atlas", "load_model", "record", "enumerate_units", "load_dataset"])
def test_top_level_names_resolve_to_the_api(name):
    import unitlens

    assert callable(getattr(unitlens, name)) and not isinstance(getattr(unitlens, name), type(sys))


def test_the_record_function_and_the_recording_package_do_not_clash():
    """``import unitlens.recording`` keeps its functions reachable (``record`` once shadowed its package)."""
    code = ("import unitlens.recording, unitlens; from unitlens import record; "
            "assert unitlens.recording.record_many and unitlens.recording.record is record; "
            "assert callable(unitlens.record)")
    subprocess.run([sys.executable, "-c", code], check=True)
