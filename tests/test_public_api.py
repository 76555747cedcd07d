"""The public API: ``import unitlens as ul`` names the workflow, imports nothing heavy until used, and every public
function and method documents each parameter and what it returns (numpydoc, parsed by griffe as the API reference
parses it)."""
from __future__ import annotations

import inspect
import logging
import subprocess
import sys

import pytest
from griffe import Docstring

import unitlens as ul
from unitlens.options import Options

VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


def _public_callables() -> list[tuple[str, object]]:
    found = []
    for name in ul.__all__:
        obj = getattr(ul, name)
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj) and not issubclass(obj, Options):  # options document their fields as a table
            found += [(f"{name}.{m}", f) for m, f in vars(obj).items()
                      if not m.startswith("_") and inspect.isfunction(f)]
    return found


def _option_fields(fn) -> set[str]:
    """Keyword arguments that ``takes_options`` adds: documented by their options class, not one by one."""
    cls = getattr(fn, "options_class", None)
    return {s.name for s in cls.specs()} if cls is not None else set()


def test_import_is_light_and_every_name_resolves():
    code = "import sys, unitlens as ul; assert 'torch' not in sys.modules; [getattr(ul, n) for n in ul.__all__]"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert sorted(ul.__all__) == sorted(dir(ul)) and len(ul.__all__) >= 40


@pytest.mark.parametrize("name,fn", _public_callables(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_callable_documents_its_parameters_and_returns(name, fn):
    logging.getLogger("griffe").setLevel(logging.ERROR)
    sig = inspect.signature(fn)
    sections = {s.kind.value: s for s in Docstring(inspect.getdoc(fn) or "", parser="numpy").parse()}
    documented = {p.name for p in sections["parameters"].value} if "parameters" in sections else set()
    documented |= {n.strip() for p in list(documented) for n in p.split(",")}  # "models, outs"
    wanted = [p for p, par in sig.parameters.items()
              if p not in ("self", "cls") and par.kind not in VARIADIC and p not in _option_fields(fn)]
    missing = [p for p in wanted if p not in documented]
    assert not missing, f"{name}: parameters without a description: {missing}"
    returns = sig.return_annotation not in (None, "None", inspect.Signature.empty) or "returns" in sections
    if returns and "yields" not in sections:
        assert "returns" in sections, f"{name}: no Returns section"
