"""Print the source files of the package and the modules that define its public API (``import unitlens as ul``).

    ruff check --select D ... $(python scripts/public_modules.py)

The modules are the values of the ``lazy_exports`` table in ``src/unitlens/__init__.py``, read from its syntax
tree: nothing is imported, so the list is the table itself. ``make lint`` runs ruff's docstring rules on them.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def public_modules(package: Path = SRC / "unitlens") -> list[str]:
    """The dotted names of the modules ``lazy_exports`` maps the package's public names to, sorted."""
    tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            table = node.args[1]
            if isinstance(table, ast.Dict):
                return sorted({ast.literal_eval(v) for v in table.values})
    raise SystemExit(f"{package / '__init__.py'} has no lazy_exports(__name__, {{...}}) table")


def module_file(module: str, src: Path = SRC) -> Path:
    """The source file of a dotted module name under ``src`` (a package's ``__init__.py``)."""
    path = src.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


if __name__ == "__main__":
    root = Path.cwd()
    files = [module_file("unitlens"), *(module_file(m) for m in public_modules())]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"public modules without a source file: {', '.join(missing)}")
    print("\n".join(str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files))
