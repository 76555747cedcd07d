"""Feature visualisations: images optimised to drive units up and down (Olah et al., 2017), made for many units at
once, stored in the atlas, and scored by MIS beside the natural exemplars.

    visualize(model, layers=["blocks.3"], units="0-7", steps=128, size=128)   # any nn.Module, no atlas
    featviz_atlas("atlas/lite0-demo", layers=["blocks.3.0.conv_pwl"], units="0-63")
    score_featviz("atlas/lite0-demo")                                          # metric mis_featviz
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.featviz.compare import ExplanationComparison, compare_explanations
    from unitlens.featviz.figures import plot_featviz
    from unitlens.featviz.objectives import BasisReader, ChannelReader
    from unitlens.featviz.options import FeatvizOptions
    from unitlens.featviz.render import FeatvizResult, visualize
    from unitlens.featviz.run import FeatvizRun, featviz_atlas
    from unitlens.featviz.scoring import FeatvizMIS, score_featviz
    from unitlens.featviz.store import FeatvizStore

__all__ = [
    "BasisReader",
    "ChannelReader",
    "ExplanationComparison",
    "FeatvizMIS",
    "FeatvizOptions",
    "FeatvizResult",
    "FeatvizRun",
    "FeatvizStore",
    "compare_explanations",
    "featviz_atlas",
    "plot_featviz",
    "score_featviz",
    "visualize",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ExplanationComparison": "unitlens.featviz.compare",
        "compare_explanations": "unitlens.featviz.compare",
        "plot_featviz": "unitlens.featviz.figures",
        "FeatvizMIS": "unitlens.featviz.scoring",
        "score_featviz": "unitlens.featviz.scoring",
        "BasisReader": "unitlens.featviz.objectives",
        "ChannelReader": "unitlens.featviz.objectives",
        "FeatvizOptions": "unitlens.featviz.options",
        "FeatvizResult": "unitlens.featviz.render",
        "visualize": "unitlens.featviz.render",
        "FeatvizRun": "unitlens.featviz.run",
        "featviz_atlas": "unitlens.featviz.run",
        "FeatvizStore": "unitlens.featviz.store",
    },
)
