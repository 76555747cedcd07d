"""The typed manifest and its format version: what reads, what is refused with which advice, and
``unitlens atlas upgrade`` (a version-1 atlas, written before versions were kept, upgraded and then used)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import unitlens.atlas.manifest as manifest_module
from unitlens.atlas import Atlas
from unitlens.atlas.manifest import FORMAT_VERSION, Manifest
from unitlens.atlas.upgrade import upgrade_atlas
from unitlens.atlas.verify import verify_atlas
from unitlens.cli import app
from unitlens.errors import AtlasError, CorruptFile
from unitlens.mis import score_mis

from conftest import COLOURS, ExplorerBackend, colour_atlas

runner = CliRunner()

# what the record pass wrote before format versions (the manifest of unitlens at commit 28a6407): no
# format_version, no options, no dataset root, no count of non-finite units
NEW_IN_2 = ("format_version", "options", "n_nonfinite")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A complete atlas of the colour detectors on 60 small images (4 colours)."""
    root = tmp_path_factory.mktemp("manifest")
    rng = np.random.default_rng(0)
    for name in ("red", "green", "blue", "grey"):
        (root / "data" / name).mkdir(parents=True)
        for i in range(15):
            arr = np.clip(np.array(COLOURS[name])[None, None] + rng.normal(0, 6, (32, 32, 3)), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(root / "data" / name / f"{name}_{i}.png")
    return colour_atlas(root / "data", root / "atlas")


@pytest.fixture
def atlas(recorded, tmp_path) -> Path:
    return Path(shutil.copytree(recorded, tmp_path / "atlas"))


def as_version_1(path: Path) -> dict:
    """Rewrite the manifest at ``path`` as the old record pass wrote it; returns the version-2 one it replaced."""
    file = path / "manifest.json"
    current = json.loads(file.read_text())
    old = {k: v for k, v in current.items() if k not in NEW_IN_2}
    old["dataset"] = {k: v for k, v in current["dataset"].items() if k != "root"}
    file.write_text(json.dumps(old))
    return current


def test_record_pass_writes_the_current_version_and_the_manifest_round_trips(atlas, tmp_path):
    data = json.loads((atlas / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 2
    assert data["options"]["record"]["k"] == 30 and data["config"]["k"] == 30  # colour_atlas records k=30
    m = Atlas(atlas).manifest
    assert m.format_version == 2 and m.complete and m.config.model == "colourdetectors"
    assert [info.name for info in m.layers] == ["detect", "pool"] and m.config.layers == ("detect", "pool")
    assert m.n_units == 12 and m.n_nonfinite == 0 and m.dataset.n == m.n_images == 60
    assert m.as_dict() == data  # the record pass writes exactly the typed form
    m.write(tmp_path / "copy")
    assert Manifest.read(tmp_path / "copy") == m
    with pytest.raises(AttributeError):  # frozen
        m.status = "recording"  # type: ignore[misc]


def test_a_version_1_atlas_reads_as_is_then_upgrades_and_scores_as_the_current_one(atlas, recorded):
    current = as_version_1(atlas)
    v1_text = (atlas / "manifest.json").read_text()
    old = Atlas(atlas)
    assert old.manifest.format_version == 1
    assert old.manifest.options == {} and old.manifest.dataset.root is None and old.manifest.n_nonfinite is None
    assert old.dataset_root == Path(current["dataset"]["root"])  # the samples' common folder stands in
    assert old.identity() == Atlas(recorded).identity()

    out = runner.invoke(app, ["atlas", "upgrade", str(atlas)])
    assert out.exit_code == 0, out.output
    assert "format version 1 -> 2" in out.output and "dataset.root" in out.output and "n_nonfinite" in out.output
    upgraded = json.loads((atlas / "manifest.json").read_text())
    record_keys = ("layers", "k", "spatial", "tokens", "tie_seed", "content_hash")
    want = {**current, "options": {"record": {k: current["config"][k] for k in record_keys}}}
    assert upgraded == want  # everything the record pass writes now, but the options that change nothing in it
    assert (atlas / "manifest.v1.json").read_text() == v1_text  # the old manifest kept

    again = runner.invoke(app, ["atlas", "upgrade", str(atlas)])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert json.loads((atlas / "manifest.json").read_text()) == upgraded  # idempotent

    backend = ExplorerBackend.build()
    ours = score_mis(atlas, backend=backend, n_tasks=5, k_expl=4, progress=False).frame
    theirs = score_mis(recorded, backend=backend, n_tasks=5, k_expl=4, write=False, progress=False).frame
    pd.testing.assert_frame_equal(ours, theirs)
    check = verify_atlas(atlas)
    assert check.ok, check.errors


def test_a_version_older_than_this_unitlens_reads_is_refused_with_the_upgrade_command(atlas, monkeypatch):
    as_version_1(atlas)
    monkeypatch.setattr(manifest_module, "READ_AS_IS", 2)  # as when version 1 can no longer be read as is
    with pytest.raises(AtlasError) as err:
        Atlas(atlas)
    message = str(err.value)
    assert "format version 1" in message and "versions 2 to 2" in message
    assert f"unitlens atlas upgrade {atlas}" in message
    out = runner.invoke(app, ["mis", str(atlas)])
    assert out.exit_code == 2 and "unitlens atlas upgrade" in out.output and "Traceback" not in out.output
    assert upgrade_atlas(atlas).changes
    assert Atlas(atlas).manifest.format_version == FORMAT_VERSION


def test_a_future_version_is_refused_with_upgrade_unitlens(atlas):
    file = atlas / "manifest.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "format_version": FORMAT_VERSION + 1,
                                "something_new": 1}))
    before = file.read_text()
    with pytest.raises(AtlasError, match=rf"format version {FORMAT_VERSION + 1}, written by a newer unitlens; this "
                                         rf"unitlens reads format versions 1 to {FORMAT_VERSION}: upgrade unitlens"):
        Atlas(atlas)
    out = runner.invoke(app, ["atlas", "upgrade", str(atlas)])
    assert out.exit_code == 2 and "upgrade unitlens" in out.output
    assert file.read_text() == before and not list(atlas.glob("manifest.v*.json"))


@pytest.mark.parametrize("damage", ["truncated", "no config", "bad version", "bad layer", "unknown field"])
def test_a_damaged_manifest_is_refused_and_left_as_it_was(atlas, damage):
    file = atlas / "manifest.json"
    as_version_1(atlas)
    data = json.loads(file.read_text())
    if damage == "truncated":
        text = file.read_text()[:100]
    else:
        if damage == "no config":
            del data["config"]
        elif damage == "bad version":
            data["format_version"] = "two"
        elif damage == "bad layer":
            data["layers"][0]["colour"] = "red"
        else:
            data["colour"] = "red"
        text = json.dumps(data)
    file.write_text(text)
    expected = {"truncated": "manifest.json", "no config": "has no config", "bad version": "format version 'two'",
                "bad layer": "malformed layer entry", "unknown field": "unknown field(s) colour"}[damage]
    with pytest.raises(CorruptFile, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Atlas(atlas)
    out = runner.invoke(app, ["atlas", "upgrade", str(atlas)])
    assert out.exit_code == 2 and expected in " ".join(out.output.split()) and "Traceback" not in out.output
    assert "unitlens record" in " ".join(out.output.split())  # how to rebuild it
    assert file.read_text() == text and not list(atlas.glob("manifest.v*.json"))
