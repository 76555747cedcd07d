"""Saved module files, looked at before (or instead of) unpickling them: TorchScript archives are refused with
the way to save the model instead, and the classes a ``torch.save(model)`` file needs are named when they cannot
be imported."""
from __future__ import annotations

import importlib
import pickletools
import zipfile
from pathlib import Path

from unitlens.errors import BadInput

SAVE_INSTEAD = (
    "Save the eager module instead: torch.save(model, 'model.pt') (its class must be importable where unitlens "
    "runs), or torch.save(model.state_dict(), 'weights.pth') and load that into its architecture: --model "
    "timm:<arch> --checkpoint weights.pth (Python: load_model('timm:<arch>', checkpoint='weights.pth'))"
)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def check_not_torchscript(path: Path) -> None:
    """Refuse a TorchScript archive (``torch.jit.script``/``trace`` + ``save``): its modules take no forward hooks,
    and a traced module keeps no layer types, so no layer of it could be recorded."""
    names = _zip_names(path)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise BadInput(f"{path} is a TorchScript archive: TorchScript modules take no forward hooks, which unitlens "
                       f"needs to read every layer. {SAVE_INSTEAD}")


def _globals(pickled: bytes) -> list[tuple[str, str]]:
    """The (module, name) pairs a pickle imports (GLOBAL, and STACK_GLOBAL after two pushed strings)."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    for op, arg, _ in pickletools.genops(pickled):
        if op.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            found.append((module, name))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append((strings[-2], strings[-1]))
        if isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
    return found


def _importable(module: str, name: str) -> bool:
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    return True


def unimportable_classes(path: Path) -> list[str]:
    """``module:Class`` of every class a ``torch.save`` zip file refers to that cannot be imported here."""
    names = [n for n in _zip_names(path) if n.endswith("/data.pkl") or n == "data.pkl"]
    if not names:
        return []
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(names[0])
    try:
        refs = _globals(pickled)
    except Exception:  # a damaged pickle: the caller falls back to the unpickling error
        return []
    return sorted({f"{m}:{n}" for m, n in refs if not _importable(m, n)})
