"""The options of the figures and the explorer, taken by their Python functions: keyword arguments and options
objects alike, each checked before any work."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unitlens.errors import BadInput
from unitlens.explorer.options import ReportOptions, ServeOptions
from unitlens.featviz.options import FeatvizPlotOptions
from unitlens.mis import summarize
from unitlens.report.mis_plots import FILES, plot_mis
from unitlens.report.options import MISPlotOptions
from unitlens.study.figure_options import StudyPlotOptions


def _two_backends() -> pd.DataFrame:
    """Per-unit MIS of two layers under backends a (every unit constant: nothing to draw) and b (all scored)."""
    rows = []
    for backend, status in (("a", "constant"), ("b", "scored")):
        for depth, layer in enumerate(("conv1", "conv2")):
            for unit in range(4):
                rows.append({"layer": layer, "unit": unit, "type": "Conv2d", "depth": depth,
                             "rel_depth": depth / 1, "rel_width": 1.0, "status": status,
                             "mis": 0.6 + 0.05 * unit if status == "scored" else np.nan, "mis_accuracy": np.nan,
                             "backend": backend})
    return pd.DataFrame(rows)


def test_plot_mis_draws_the_chosen_backend_of_a_frame_with_several(tmp_path):
    frame = _two_backends()
    with pytest.raises(BadInput, match=r"several backends \['a', 'b'\]; choose one"):
        plot_mis(frame, summarize(frame)["layer"], tmp_path / "none")
    with pytest.raises(BadInput, match="no scores of backend 'c'"):
        plot_mis(frame, summarize(frame)["layer"], tmp_path / "none", backend="c")
    assert not (tmp_path / "none").exists()  # refused before anything was written
    with pytest.raises(BadInput, match="no scored unit"):  # a's rows alone: all constant
        plot_mis(frame, summarize(frame[frame["backend"] == "a"])["layer"], tmp_path / "a", backend="a")
    b = frame[frame["backend"] == "b"]
    paths = plot_mis(frame, summarize(b)["layer"], tmp_path / "b", options=MISPlotOptions(backend="b"))
    assert sorted(p.name for p in paths) == sorted(FILES.values()) and all(p.is_file() for p in paths)


def test_options_of_figures_and_explorer_are_checked_and_converted():
    assert FeatvizPlotOptions(units=[3, 1]).units == "3,1"  # the list form Python users had, as the option's text
    assert FeatvizPlotOptions(layers="a, b.*").layers == ("a", "b.*")
    assert ReportOptions(layers=["x"]).layers == ("x",)
    for make, message in [(lambda: FeatvizPlotOptions(units="4-2"), "runs backwards"),
                          (lambda: FeatvizPlotOptions(k=0), "at least 1"),
                          (lambda: StudyPlotOptions(epoch=-1), "at least 0"),
                          (lambda: StudyPlotOptions(depth_bins=0), "at least 1"),
                          (lambda: ServeOptions(port=70000), "at most 65535")]:
        with pytest.raises(BadInput, match=message):
            make()
