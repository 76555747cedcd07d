"""``overcomplete_sae()``: the SAE part of the maintained ``overcomplete`` library, without its plotting part.

``import overcomplete`` fails with matplotlib >= 3.9: the package's ``__init__`` imports its visualisation module,
which calls ``matplotlib.cm.get_cmap`` (removed in 3.9) at import time; it also loads timm, OpenCV and
scikit-image (seconds). Only ``overcomplete.sae`` is needed here (models, losses, ``train_sae``), and it imports
none of that. So the package is registered from its own location without running its ``__init__``, and
``overcomplete.sae`` is imported normally from there: the library's code is used unchanged, matplotlib stays at the
project's version. If ``overcomplete`` was already imported in this process (a version that imports cleanly),
that module is used as it is.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from unitlens.errors import Unavailable


def overcomplete_sae() -> Any:
    """The ``overcomplete.sae`` module (``TopKSAE``, ``BatchTopKSAE``, ``JumpSAE``, ``RATopKSAE``, ``train_sae``)."""
    if "overcomplete" not in sys.modules:
        spec = importlib.util.find_spec("overcomplete")
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable("the SAE kinds need the PyPI package 'overcomplete': pip install overcomplete")
        package = types.ModuleType("overcomplete")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["overcomplete"] = package
    return importlib.import_module("overcomplete.sae")
