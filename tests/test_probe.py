"""The probe pass: probe specs (folders, CSVs) and their errors, activations equal to the model's own reduced
outputs, storage in the atlas with its identity, the memory bound, the held-out split, the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import unitlens.cli.common
from unitlens.cli import app
from unitlens.errors import AtlasError, BadInput, MissingFile, NotComputed
from unitlens.probe import ProbeStore, holdout_split, load_probe_spec, record_probe

from conftest import COMBOS, colour_probe_csv, presence_model, stripe_image

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))


def _record(model, data, out):
    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    infos = enumerate_units(model.model, include=["detect", "presence"])
    record(model, str(data), out, infos, k=4, batch_size=8, num_workers=0, progress=False)
    return out


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    data = colour_probe_csv(root / "data", COMBOS, per=2, seed=1).parent / "images"
    return _record(presence_model(), data, root / "atlas")


def _folders(root, per=3, seed=2):
    rng = np.random.default_rng(seed)
    for name in ("red", "green", "blue"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per):
            Image.fromarray(stripe_image((name,), (24, 24), rng)).save(root / name / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------------------- specs
def test_folder_and_csv_specs(tmp_path):
    spec = load_probe_spec(_folders(tmp_path / "f"))
    assert spec.kind == "folders" and spec.concepts == ["blue", "green", "red"] and len(spec) == 9
    assert spec.membership.sum(0).tolist() == [3, 3, 3] and (spec.membership.sum(1) == 1).all()
    csv = colour_probe_csv(tmp_path / "c", COMBOS, per=2, seed=0)
    spec = load_probe_spec(csv)
    assert spec.concepts == ["red", "green", "blue"] and len(spec) == 14
    rows = {p.name: tuple(m) for p, m in zip(spec.paths, spec.membership)}
    assert rows["red_green_0.png"] == (True, True, False) and rows["none_1.png"] == (False, False, False)
    # a column of names: one concept per value; a value in two columns gets the column's prefix
    table = pd.read_csv(csv).assign(kind=lambda t: np.where(t["red"] == 1, "warm", "cold"),
                                    other=lambda t: np.where(t["blue"] == 1, "warm", ""))
    table.to_csv(tmp_path / "c" / "named.csv", index=False)
    named = load_probe_spec(tmp_path / "c" / "named.csv", columns=["kind", "other"])
    assert named.concepts == ["cold", "kind:warm", "other:warm"]
    np.testing.assert_array_equal(named.membership[:, 1], table["red"].to_numpy() == 1)


def test_bad_specs(tmp_path):
    root = _folders(tmp_path / "f")
    (root / "empty").mkdir()
    with pytest.raises(BadInput, match="empty holds no images"):
        load_probe_spec(root)
    (root / "empty").rmdir()
    (root / "also_red").symlink_to(root / "red", target_is_directory=True)
    with pytest.raises(BadInput, match="overlap"):
        load_probe_spec(root)
    csv = colour_probe_csv(tmp_path / "c", COMBOS, per=1, seed=0)
    with pytest.raises(BadInput, match="no column.*purple.*--columns"):
        load_probe_spec(csv, columns=["red", "purple"])
    table = pd.read_csv(csv)
    table.assign(blue=0).to_csv(tmp_path / "c" / "zero.csv", index=False)
    with pytest.raises(BadInput, match="blue of .* hold no image"):
        load_probe_spec(tmp_path / "c" / "zero.csv")
    pd.concat([table, table.head(1)]).to_csv(tmp_path / "c" / "twice.csv", index=False)
    with pytest.raises(BadInput, match="twice"):
        load_probe_spec(tmp_path / "c" / "twice.csv")
    table.drop(columns="path").to_csv(tmp_path / "c" / "nopath.csv", index=False)
    with pytest.raises(BadInput, match="no 'path' column"):
        load_probe_spec(tmp_path / "c" / "nopath.csv")
    with pytest.raises(MissingFile):
        load_probe_spec(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- the pass
def test_probe_pass_equals_the_models_reduced_outputs(atlas, tmp_path):
    """Images of other sizes go through the model's transform; stored activations equal a direct forward."""
    csv = colour_probe_csv(tmp_path, COMBOS, per=2, seed=5, sizes=((32, 32), (20, 44), (60, 28)))
    model = presence_model()
    r = record_probe(atlas, csv, model=model, batch_size=3, progress=False)
    store = ProbeStore.open(atlas)
    assert r.n_images == 14 and store.layers == ["detect", "presence"] and store.meta["spatial"] == "mean"
    assert store.meta["identity"] == store.atlas.identity()
    acts = store.activations("presence")
    assert acts.shape == (5, 14)
    spec = load_probe_spec(csv)
    with torch.no_grad():
        x = torch.stack([model.transform(Image.open(p).convert("RGB")) for p in spec.paths])
        captured = {}
        hook = model.model.presence.register_forward_hook(lambda m, i, o: captured.setdefault("p", o))
        model.model(x)
        hook.remove()
    torch.testing.assert_close(acts, captured["p"].T)
    # the planted units are exact indicators of their concepts
    member = store.membership
    np.testing.assert_array_equal(acts[0].numpy() > 0, member[:, 0])
    np.testing.assert_array_equal(acts[3].numpy() > 0, member[:, 0] & ~member[:, 1])
    assert (acts[4] == 0).all()
    detect = store.activations("detect")  # (B, 3, H, W) maps, spatial mean as the record pass takes it
    assert detect.shape == (3, 14) and (detect[0][torch.from_numpy(member[:, 0])] > 0).all()


def test_memory_bound_and_missing_results(atlas, tmp_path):
    csv = colour_probe_csv(tmp_path, COMBOS, per=1, seed=0)
    # refused before the model is loaded: this atlas's hand-built model cannot be loaded from its manifest
    with pytest.raises(BadInput, match="over the bound of 20.*--max-activations"):
        record_probe(atlas, csv, name="small", max_activations=20, progress=False)
    with pytest.raises(AtlasError, match="cannot load the analysed model"):
        record_probe(atlas, csv, name="small", progress=False)
    with pytest.raises(NotComputed, match="unitlens probe .* --name nothing"):
        ProbeStore.open(atlas, "nothing")
    with pytest.raises(BadInput, match="letters, digits"):
        ProbeStore(atlas, "a/b")


def test_probe_of_another_atlas_is_refused(atlas, tmp_path):
    import json
    import shutil

    csv = colour_probe_csv(tmp_path / "p", COMBOS, per=1, seed=0)
    copy = tmp_path / "copy"
    shutil.copytree(atlas, copy)
    record_probe(copy, csv, model=presence_model(), progress=False)
    meta_path = copy / "probe" / "default" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["identity"]["weights_hash"] = "other"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AtlasError, match="does not belong to atlas"):
        ProbeStore.open(copy)


# ---------------------------------------------------------------------------------------------- split
def test_holdout_split_is_disjoint_stratified_and_seeded():
    rng = np.random.default_rng(0)
    member = rng.random((101, 4)) < 0.3
    a, b = holdout_split(member, 0.5, seed=3)
    assert not set(a) & set(b) and sorted([*a, *b]) == list(range(101))
    for k in range(4):  # every concept with two or more images is on both sides
        assert member[a, k].any() and member[b, k].any()
    a2, b2 = holdout_split(member, 0.5, seed=3)
    np.testing.assert_array_equal(b, b2)
    assert not np.array_equal(holdout_split(member, 0.5, seed=4)[1], b)
    assert abs(len(b) - 50) <= 8
    with pytest.raises(BadInput):
        holdout_split(member, 1.0, 0)


# ---------------------------------------------------------------------------------------------- CLI
def test_probe_command(tmp_path):
    """The CLI loads the atlas's model from its manifest (a saved module file) and prints what it stored."""
    from unitlens.zoo import load_model

    model_file = tmp_path / "presence.pt"
    torch.save(presence_model(normalized=True).model, model_file)
    data = colour_probe_csv(tmp_path / "data", COMBOS, per=1, seed=1).parent / "images"
    atlas = _record(load_model(str(model_file)), data, tmp_path / "atlas")
    root = _folders(tmp_path / "concepts", per=2)
    out = runner.invoke(app, ["probe", str(atlas), "--data", str(root), "--layers", "presence"])
    assert out.exit_code == 0, out.output
    assert "6 images, 3 concepts" in out.output and "presence" in out.output
    acts = ProbeStore.open(atlas).activations("presence")
    member = ProbeStore.open(atlas).membership  # blue, green, red
    np.testing.assert_array_equal(acts[0].numpy() > 0, member[:, 2])
    bad = runner.invoke(app, ["probe", str(atlas), "--data", str(tmp_path / "data" / "probe.csv"),
                              "--columns", "purple"])
    assert bad.exit_code == 2 and "no column(s) purple" in bad.output
