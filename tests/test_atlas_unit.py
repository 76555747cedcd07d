"""``Atlas.unit(layer, i)`` and the notebook views of an atlas and a unit, against the atlas's own files."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from unitlens import record
from unitlens.atlas import Atlas
from unitlens.errors import BadInput


@pytest.fixture
def atlas(exact_model, random_images, tmp_path) -> Atlas:
    return record(exact_model, str(random_images), tmp_path / "atlas", ["conv"], k=5, progress=False,
                  num_workers=0).atlas


def test_a_unit_is_its_rows_and_exemplars(atlas):
    unit = atlas.unit("conv", 3)
    units = atlas.units()
    row = units[(units["layer"] == "conv") & (units["unit"] == 3)].iloc[0]
    assert unit.stats["max"] == row["max"] and unit.stats["mean"] == row["mean"]
    ex = atlas.exemplars("conv")
    top = unit.exemplars[unit.exemplars["side"] == "top"]
    assert top["id"].tolist() == ex.top_ids[3].tolist() and top["activation"].tolist() == ex.top_vals[3].tolist()
    bottom = unit.exemplars[unit.exemplars["side"] == "bottom"]
    assert bottom["id"].tolist() == ex.bottom_ids[3].tolist()
    paths = atlas.samples().set_index("id")["path"]
    assert top["path"].tolist() == [paths[i] for i in ex.top_ids[3].tolist()]
    first = atlas.dataset().image(int(ex.top_ids[3, 0]))
    assert unit.images("top", 2)[0].tobytes() == first.tobytes()
    assert unit.scores.empty


def test_units_outside_the_layer_are_refused(atlas):
    with pytest.raises(BadInput, match="units 0 to 4; there is no unit 5"):
        atlas.unit("conv", 5)
    with pytest.raises(Exception, match="nope"):
        atlas.unit("nope", 0)


def test_notebook_views_show_the_facts_and_the_images(atlas):
    page = atlas.unit("conv", 0)._repr_html_()
    assert len(re.findall(r"<img src='data:image/jpeg;base64,", page)) == 10  # 5 top + 5 bottom (k = 5)
    assert "most activating" in page and "least activating" in page
    overview = atlas._repr_html_()
    assert "conv" in overview and str(atlas.manifest.n_units) in overview
    atlas.put_scores(pd.DataFrame({"layer": ["conv"], "unit": [0], "metric": ["mis"], "backend": ["x"],
                                   "value": [0.75], "params": ["{}"]}))
    assert "0.75" in atlas.unit("conv", 0)._repr_html_()
