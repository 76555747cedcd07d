"""``unitlens study plan``: a study's dry run without weights or data (units against a count of the modules, the
check's findings, the atlas size against a recorded atlas), and an entry whose check fails: named in the plan,
failed by ``study run`` before anything of it is recorded, the other entries done."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import unitlens.data.datasets
from test_layer_check import Shared
from unitlens.cli import app
from unitlens.recording import record
from unitlens.study import run_study
from unitlens.study.plan import estimate_atlas_bytes, plan_study
from unitlens.zoo import load_model

from conftest import write_images

RESNET = "timm:resnet18.a1_in1k?input_size=32"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study on a folder that does not exist: a tagged timm model (pretrained: no weights may be loaded),
    CoaT (repeated modules), and a saved module with a layer the pass cannot record."""
    root = tmp_path_factory.mktemp("plan")
    torch.save(Shared(odd=True).eval(), root / "odd.pt")
    (root / "study.toml").write_text(textwrap.dedent(f"""\
        name = "planned"
        data = "{root / 'no-such-folder'}"
        [record]
        k = 200
        [[entry]]
        model = "{RESNET}"
        [[entry]]
        model = "timm:coat_lite_tiny.in1k"
        [[entry]]
        name = "odd"
        model = "{root / 'odd.pt'}"
        """))
    return root / "study.toml"


def _width(module: nn.Module) -> int | None:
    for attr in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    return None


def test_the_plan_loads_no_weights_and_reads_no_data(study, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.unitlens-test.invalid")  # pretrained weights cannot come
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(unitlens.data.datasets, "load_dataset", lambda *a, **k: pytest.fail("read the data"))
    plan = plan_study(study, progress=False)
    table = plan.table.set_index("entry")
    resnet = table.loc["resnet18.a1_in1k"]
    assert (resnet["source"], resnet["architecture"], resnet["tag"], resnet["weights"]) == \
        ("timm", "resnet18", "a1_in1k", "pretrained")
    real = load_model(RESNET, pretrained=False).model  # counted by hand: conv, BN and linear widths
    widths = [w for _, m in real.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))
              and (w := _width(m)) is not None][1:-1]  # the MIS paper leaves out the first and the last
    assert (resnet["layers"], resnet["units"], resnet["input_size"]) == (len(widths), sum(widths), "3x32x32")
    coat = table.loc["coat_lite_tiny.in1k"]
    assert coat["split"] == 16 and "run several times per forward" in coat["check"] and coat["problem"] == ""
    assert "cannot be recorded" in table.loc["odd", "problem"] and "--exclude 'odd'" in table.loc["odd", "problem"]
    totals = plan.totals()
    assert totals["units"] == resnet["units"] + coat["units"] and totals["problems"] == 1


def test_the_estimated_atlas_size_is_the_recorded_one(tmp_path):
    rng = np.random.default_rng(0)
    write_images(tmp_path / "images", [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(40)])
    model = load_model(RESNET, pretrained=False)
    atlas = record(model, str(tmp_path / "images"), tmp_path / "a", k=16, batch_size=40, num_workers=0,
                   progress=False).atlas
    files = [*(atlas.path / "exemplars").iterdir(), atlas.path / "units.parquet", atlas.path / "manifest.json"]
    on_disk = sum(f.stat().st_size for f in files)
    estimate = estimate_atlas_bytes([info.width for info in atlas.layers], 16)
    assert 0.85 < estimate / on_disk < 1.15, (estimate, on_disk)


def test_plan_on_the_command_line(study):
    out = CliRunner().invoke(app, ["study", "plan", str(study), "--format", "json"])
    assert out.exit_code == 0, out.output
    tables = json.loads(out.stdout)
    rows = {r["entry"]: r for r in tables["entries"]["rows"]}
    assert rows["coat_lite_tiny.in1k"]["units"] > 0 and rows["odd"]["problem"]
    assert tables["totals"]["rows"][0]["units"] == sum(r["units"] for r in rows.values())


def test_study_run_fails_the_entry_whose_check_fails_and_goes_on(tmp_path):
    rng = np.random.default_rng(1)
    write_images(tmp_path / "images", [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(6)])
    torch.save(Shared(odd=True).eval(), tmp_path / "odd.pt")
    (tmp_path / "s.toml").write_text(textwrap.dedent(f"""\
        name = "s"
        data = "{tmp_path / 'images'}"
        steps = ["record"]
        [record]
        k = 2
        num_workers = 0
        [[entry]]
        name = "odd"
        model = "{tmp_path / 'odd.pt'}"
        [[entry]]
        model = "{RESNET}"
        random = true
        """))
    run = run_study(tmp_path / "s.toml", tmp_path / "out", progress=False)
    assert list(run.failed) == ["odd"] and "cannot be recorded" in run.failed["odd"]
    assert "--exclude 'odd'" in run.failed["odd"]
    assert not (tmp_path / "out" / "atlases" / "odd").exists()  # failed before anything of it was recorded
    done = [r for r in run.state["entries"] if r["name"] != "odd"]
    assert [r["steps"]["record"]["status"] for r in done] == ["done"]


def test_a_study_entry_with_an_unknown_tag_is_refused_with_the_nearest(tmp_path):
    from unitlens.errors import BadInput
    from unitlens.study import load_spec

    (tmp_path / "s.toml").write_text('[[entry]]\nmodel = "timm:resnet50.a1_in1kk"\n')
    with pytest.raises(BadInput, match=r"entry 1 \(timm:resnet50.a1_in1kk\): timm has no pretrained tag 'a1_in1kk' "
                                       r"for resnet50; nearest: resnet50.a1_in1k"):
        load_spec(tmp_path / "s.toml")
