"""SemanticLens core, offline and fast: tiny atlases of a hand-built colour-detector model on synthetic images,
embedded by a deterministic colour-histogram backend whose similarities are known exactly.

Histogram embedding (12-d: 4 bins per RGB channel, normalised): a red image (225, 30, 30) puts all its mass
in bins R3, G0, B0; green (30, 225, 40) in R0, G3, B0; blue (30, 40, 225) in R0, G0, B3; grey (160, 160, 160)
in R2, G2, B2. The noise added (σ = 6) never crosses a bin edge. So cos(red, green) = cos(red, blue) =
cos(green, blue) = 1/3, cos(grey, colour) = 0, and the dataset null (mean over 6 images of each of the four
colours) n ∝ (1, 2, 1) per channel gives cos(red, n) = 5 / √54.
"""
from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rich.console import Console
from torch import nn
from torchvision import transforms as T
from typer.testing import CliRunner

import unitlens.cli.common
from unitlens.atlas import Atlas
from unitlens.backends.base import BACKENDS, Backend
from unitlens.cli.lens import app as lens_app
from unitlens.cli.plot import lens as plot_lens_command
from unitlens.data.geometry import input_geometry
from unitlens.errors import LensError
from unitlens.lens import LensStore, compare, embed_units, label, measures, search, select_examples
from unitlens.lens.store import LayerLens, lancedb_available
from unitlens.zoo.factory import LoadedModel

RGB = {"red": (225, 30, 30), "green": (30, 225, 40), "blue": (30, 40, 225), "grey": (160, 160, 160)}
NULL_COS_RED = 5 / math.sqrt(54)
runner = CliRunner()


# ---------------------------------------------------------------------------------------------- fake backend
def _hist(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8-valued floats -> (B, 12) per-channel 4-bin histograms."""
    bins = (x / 64).floor().clamp(0, 3).long()  # (B, 3, H, W)
    onehot = torch.nn.functional.one_hot(bins, 4).float()  # (B, 3, H, W, 4)
    return onehot.mean((2, 3)).flatten(1)


COLOUR_HIST = {name: _hist(torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1))[0] for name, rgb in RGB.items()}


class HistBackend(Backend):
    """Colour histograms; the text tower maps a colour word to that colour's histogram (no word: all ones)."""

    dim = 12

    def __init__(self, name="lenstest", text=True):
        super().__init__("cpu")
        self.name, self.has_text = name, text
        self.images_seen = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 8), Image.NEAREST), dtype=np.float32)
                                .copy()).permute(2, 0, 1)

    def encode_images(self, batch):
        self.images_seen += batch.shape[0]
        return self._finish(_hist(batch))

    def encode_text(self, texts):
        if not self.has_text:
            return super().encode_text(texts)
        out = []
        for t in texts:
            words = [w for w in RGB if w in t.lower()]
            out.append(sum(COLOUR_HIST[w] for w in words) if words else torch.ones(12))
        return self._finish(torch.stack(out))


BACKENDS.register("lenstest", lambda spec, device=None, **kw: HistBackend("lenstest", True))
BACKENDS.register("lenstest-notext", lambda spec, device=None, **kw: HistBackend("lenstest-notext", False))


# ---------------------------------------------------------------------------------------------- hand-built model
class Detect(nn.Module):
    """Per-pixel colour detectors relu(1 − ‖x − c‖ / 0.35) for each colour, then a constant-zero unit."""

    def __init__(self, colours):
        super().__init__()
        self.register_buffer("c", torch.tensor([RGB[n] for n in colours], dtype=torch.float32) / 255)

    def forward(self, x):
        d = (x[:, None] - self.c[None, :, :, None, None]).norm(dim=2)  # (B, K, H, W)
        out = (1 - d / 0.35).clamp_min(0)
        return torch.cat([out, torch.zeros_like(out[:, :1])], 1)


class Tokens(nn.Module):
    """(B, C, g, g) -> (B, 1 + g², C): a cls token (mean) followed by the patch tokens."""

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        return torch.cat([t.mean(1, keepdim=True), t], 1)


class ColourNet(nn.Module):
    def __init__(self, colours=("red", "green", "blue", "grey")):
        super().__init__()
        self.detect = Detect(colours)
        self.pool = nn.AvgPool2d(4)
        self.tokens = Tokens()
        self.head = nn.Linear(len(colours) + 1, 2)

    def forward(self, x):
        return self.head(self.tokens(self.pool(self.detect(x)))[:, 0])


def colour_model(colours=("red", "green", "blue", "grey")) -> LoadedModel:
    transform = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    return LoadedModel(name="colournet", model=ColourNet(colours).eval(), transform=transform, weights="hand-built",
                       input_size=(3, 32, 32))


def _noisy(rgb, size, rng):
    w, h = size
    return np.clip(np.array(rgb)[None, None] + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _record(model, data, out):
    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    infos = enumerate_units(model.model, include=["detect", "pool", "tokens"])
    record(model, str(data), out, infos, k=6, batch_size=16, num_workers=0, progress=False)
    return out


def _solid_images(root, seed=0, per=6):
    rng = np.random.default_rng(seed)
    for name, rgb in RGB.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per):
            Image.fromarray(_noisy(rgb, (32, 32), rng)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def atlases(tmp_path_factory):
    """A: red/green/blue/grey detectors; B: red/green/blue only (no grey unit); both embedded with m=5."""
    root = tmp_path_factory.mktemp("lens")
    data = _solid_images(root / "data")
    a = _record(colour_model(), data, root / "A")
    b = _record(colour_model(("red", "green", "blue")), data, root / "B")
    backend = HistBackend()
    embed_units(a, backend, m=5, progress=False)
    embed_units(b, backend, m=5, progress=False)
    concepts = root / "concepts"  # fresh images, not dataset samples
    rng = np.random.default_rng(7)
    for name in ("red", "green", "blue"):
        (concepts / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(_noisy(RGB[name], (20, 20), rng)).save(concepts / name / f"{i}.png")
    return {"A": a, "B": b, "root": root, "data": data, "concepts": concepts, "backend": backend}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))


# ---------------------------------------------------------------------------------------------- embed
def test_theta_is_mean_of_example_embeddings_and_cached_once(atlases):
    store = LensStore.open(atlases["A"], "lenstest")
    assert store.layers == ["detect", "pool", "tokens"]
    data = store.read_layer("detect")
    assert data.theta.shape == (5, 12) and data.ids.shape == (5, 5)
    # each detector's top-5 exemplars are images of its colour, so θ̂ is that colour's histogram
    samples = pd.read_parquet(atlases["A"] / "samples.parquet").set_index("id")
    for unit, colour in enumerate(["red", "green", "blue", "grey"]):
        assert set(samples.loc[data.ids[unit].tolist(), "label"]) == {colour}
        expected = torch.nn.functional.normalize(COLOUR_HIST[colour], dim=0)
        assert torch.allclose(data.vectors[unit], expected, atol=1e-5)
    assert data.constant.tolist() == [False, False, False, False, True]
    # θ = mean of the stored example embeddings; every distinct image is stored once per layer
    assert torch.allclose(data.theta, data.examples.mean(1), atol=1e-6)
    assert data.example_vectors.shape[0] == len(set(data.ids[data.mask].tolist()))
    # the cache holds each image once, shared by all three layers and both atlases' identical samples
    index = pd.read_parquet(next((atlases["A"] / "embeddings").glob("*/index.parquet")))
    assert index["id"].is_unique and index["x0"].isna().all()
    # re-running is a no-op; the backend embeds nothing new
    backend = HistBackend()
    again = embed_units(atlases["A"], backend, m=5, progress=False)
    assert again.embedded == [] and set(again.skipped) == {"detect", "pool", "tokens"} and backend.images_seen == 0


def test_other_weights_under_the_same_name_are_never_mixed(atlases, tmp_path):
    """A backend rebuilt with other weights (same name, new weights_id) drops the old vectors and re-embeds."""
    copy = tmp_path / "A"
    shutil.copytree(atlases["A"], copy)
    retrained = HistBackend()
    retrained.weights_id = "v2"
    with pytest.raises(LensError, match="other weights.*embed again"):
        search(copy, text="red", backend=retrained)
    again = embed_units(copy, retrained, m=5, progress=False)
    assert set(again.embedded) == {"detect", "pool", "tokens"} and again.skipped == []
    n_images = len(pd.read_parquet(copy / "samples.parquet"))
    assert retrained.images_seen == n_images  # the example cache of the old weights was dropped too (+ the null)
    assert LensStore.open(copy).weights_id == "v2"
    assert int(search(copy, text="red", backend=retrained, top=1).frame["unit"].iloc[0]) == 0
    with pytest.raises(LensError, match="other weights"):
        search(copy, text="red", backend=HistBackend())


def test_select_examples_and_unknown_layer(atlases):
    from unitlens.atlas import Atlas
    from unitlens.errors import AtlasError

    atlas = Atlas(atlases["A"])
    ex = select_examples(atlas, "detect", 3)
    top = atlas.exemplars("detect")
    assert torch.equal(ex.ids, top.top_ids[:, :3]) and bool(ex.mask.all()) and not bool(ex.has_box.any())
    with pytest.raises(AtlasError, match="layer 'nope' is not in atlas"):
        embed_units(atlases["A"], HistBackend(), layers=["nope"], progress=False)


# ---------------------------------------------------------------------------------------------- search
def test_image_search_finds_the_unit_of_the_probe_colour(atlases, tmp_path):
    probe = tmp_path / "probe.png"
    Image.fromarray(_noisy(RGB["blue"], (40, 24), np.random.default_rng(5))).save(probe)
    res = search(atlases["A"], images=[probe], backend=atlases["backend"], top=6, engine="exact")
    top = res.frame
    # the blue detector of each of the three layers (a = cos = 1: no null for image probes by default), then
    # the red and green detectors (cos = 1/3)
    assert res.probe.null is None
    assert set(zip(top["layer"][:3], top["unit"][:3])) == {("detect", 2), ("pool", 2), ("tokens", 2)}
    assert np.allclose(top["a"][:3], 1.0, atol=1e-5) and np.allclose(top["a"][3:], 1 / 3, atol=1e-5)
    assert set(top["unit"][3:]) <= {0, 1}
    assert all("blue" in p for p in top["exemplars"].iloc[0])
    # with the dataset null: a = 1 − cos(blue, n), the same units first
    with_null = search(atlases["A"], images=[probe], backend=atlases["backend"], top=1, null="dataset")
    assert with_null.frame["unit"].iloc[0] == 2
    assert float(torch.nn.functional.normalize(COLOUR_HIST["blue"], dim=0) @ with_null.probe.null) == \
        pytest.approx(NULL_COS_RED, abs=1e-5)  # symmetric colours: the same null cosine as red
    assert with_null.frame["a"].iloc[0] == pytest.approx(1 - NULL_COS_RED, abs=1e-5)


def test_text_search_uses_templates_and_null(atlases):
    res = search(atlases["A"], text="green", backend=atlases["backend"], top=3, layers=["pool"])
    assert res.frame["unit"].tolist()[0] == 1 and set(res.frame["layer"]) == {"pool"}
    assert res.probe.sources == ["green", "green-like", "a green", "an image of a close up of green"]
    # null = the empty templates, which this backend maps to the all-ones vector
    assert torch.allclose(res.probe.null, torch.full((12,), 12 ** -0.5), atol=1e-6)
    green = torch.nn.functional.normalize(COLOUR_HIST["green"], dim=0)
    assert res.frame["a"].iloc[0] == pytest.approx(1 - float(green @ res.probe.null), abs=1e-5)


def test_text_search_without_text_encoder_is_a_clear_error(atlases, tmp_path):
    copy = tmp_path / "notext"
    shutil.copytree(atlases["B"], copy, ignore=shutil.ignore_patterns("lens", "embeddings"))
    embed_units(copy, HistBackend("lenstest-notext", text=False), m=5, progress=False)
    with pytest.raises(LensError, match="no text encoder"):
        search(copy, text="red")
    # compare needs both atlases in the same backend's space
    with pytest.raises(LensError, match="different backends"):
        compare(atlases["A"], copy)


@pytest.mark.skipif(not lancedb_available(), reason="lancedb not installed")
def test_exact_and_lancedb_rank_identically(atlases, tmp_path):
    copy = tmp_path / "synthetic"
    shutil.copytree(atlases["A"], copy, ignore=shutil.ignore_patterns("lens", "embeddings"))
    store = LensStore(copy, "synthetic", dim=24, create=True)
    g = torch.Generator().manual_seed(0)
    for name, U in (("detect", 40), ("pool", 25), ("tokens", 60)):
        theta = torch.randn(U, 24, generator=g)
        z = torch.zeros(U, 1, dtype=torch.int64)
        store.write_layer(LayerLens(name, theta, z, z.float(), z.bool() | True, torch.zeros(U, 1, 4, dtype=torch.int64),
                                    z.bool(), torch.arange(U)[:, None], torch.nn.functional.normalize(theta, dim=-1),
                                    torch.zeros(U, dtype=torch.bool)), {"units": U, "m": 1, "crop": "none"})
    assert store.has_lance(store.layers)
    for seed in range(5):
        q = torch.randn(24, generator=torch.Generator().manual_seed(100 + seed))
        exact = store.search(q, top=125, engine="exact")
        lance = store.search(q, top=125, engine="lancedb")
        assert list(zip(exact["layer"], exact["unit"])) == list(zip(lance["layer"], lance["unit"]))
        assert np.allclose(exact["a"], lance["a"], atol=1e-5)
        top = store.search(q, top=7, engine="lancedb", layers=["pool"])
        assert list(top["unit"]) == list(exact[exact["layer"] == "pool"]["unit"][:7])
    # and on the real tiny atlas the top hit agrees
    res_e = search(atlases["A"], text="red", backend=atlases["backend"], top=1, engine="exact")
    res_l = search(atlases["A"], text="red", backend=atlases["backend"], top=1, engine="lancedb")
    assert res_e.frame["unit"].iloc[0] == res_l.frame["unit"].iloc[0] == 0


# ---------------------------------------------------------------------------------------------- label
def test_label_image_concepts_parents_and_none(atlases, tmp_path):
    parents = tmp_path / "parents.yaml"
    parents.write_text("warm: [red]\ncool: [green, blue]\n")
    res = label(atlases["A"], atlases["concepts"], backend=atlases["backend"], parents=parents)
    got = {(r.layer, r.unit): r.label for r in res.frame.itertuples()}
    for layer in ("detect", "pool", "tokens"):
        assert [got[(layer, u)] for u in range(4)] == ["red", "green", "blue", "none"]
        assert (layer, 4) not in got  # constant unit
    red = res.frame[(res.frame["layer"] == "detect") & (res.frame["unit"] == 0)].iloc[0]
    assert red["a"] == pytest.approx(1 - NULL_COS_RED, abs=1e-4)
    assert red["parent"] == "warm"
    grey = res.frame[(res.frame["layer"] == "detect") & (res.frame["unit"] == 3)].iloc[0]
    assert grey["a"] == pytest.approx(0 - 3 / math.sqrt(3 * 18), abs=1e-4)  # cos(grey, red) = 0 minus cos(grey, n)
    assert res.n_constant == 3
    counts = res.parent_counts[res.parent_counts["layer"] == "pool"].set_index("parent")["units"].to_dict()
    assert counts == {"cool": 2, "warm": 1, "none": 1}
    assert set(zip(res.unexpected["layer"], res.unexpected["unit"])) == {("detect", 3), ("pool", 3), ("tokens", 3)}
    stored = Atlas(atlases["A"]).labels(method="semanticlens")  # the atlas's label store, with its backend
    assert set(stored["backend"]) == {LensStore.open(atlases["A"]).backend}
    assert stored.set_index(["layer", "unit"])["label"].to_dict() == res.frame.set_index(["layer", "unit"])[
        "label"].to_dict()
    # a threshold above every alignment leaves every unit unlabelled
    high = label(atlases["A"], atlases["concepts"], backend=atlases["backend"], threshold=0.9, write=False)
    assert set(high.frame["label"]) == {"none"}


def test_label_text_concepts_and_errors(atlases, tmp_path):
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("# colours\nred\n\nblue\ngreen\n")
    res = label(atlases["A"], concepts, backend=atlases["backend"], layers=["detect"], write=False)
    assert res.frame.set_index("unit")["label"].to_dict() == {0: "red", 1: "green", 2: "blue", 3: "none"}
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(LensError, match="empty"):
        label(atlases["A"], empty, backend=atlases["backend"])
    with pytest.raises(LensError, match="does not exist"):
        label(atlases["A"], tmp_path / "missing.txt", backend=atlases["backend"])
    (tmp_path / "nofolders").mkdir()
    with pytest.raises(LensError, match="no sub-folder with images"):
        label(atlases["A"], tmp_path / "nofolders", backend=atlases["backend"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(LensError, match="cannot read probe image"):
        search(atlases["A"], images=[bad], backend=atlases["backend"])


# ---------------------------------------------------------------------------------------------- compare
def test_compare_self_and_missing_unit(atlases):
    self_cmp = compare(atlases["A"], atlases["A"])
    assert np.allclose(np.diag(self_cmp.matrix.to_numpy()), 1.0, atol=1e-6)
    assert self_cmp.unmatched.empty
    res = compare(atlases["A"], atlases["B"])
    # B has no grey detector: A's red/green/blue units match exactly, grey's best cosine is 0
    assert np.allclose(res.matrix.to_numpy(), 0.75, atol=1e-5)
    assert list(zip(res.unmatched["layer"], res.unmatched["unit"])) == [("detect", 3), ("pool", 3), ("tokens", 3)]
    assert np.allclose(res.unmatched["cos"], 0.0, atol=1e-6)
    back = compare(atlases["B"], atlases["A"], layers_a=["detect"], layers_b=["tokens"])
    assert back.matrix.shape == (1, 1) and back.matrix.iloc[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_errors_before_embedding(atlases, tmp_path):
    copy = tmp_path / "plain"
    shutil.copytree(atlases["B"], copy, ignore=shutil.ignore_patterns("lens", "embeddings"))
    with pytest.raises(LensError, match="not been embedded"):
        search(copy, text="red", backend="lenstest")
    with pytest.raises(LensError, match="not been embedded"):
        compare(atlases["A"], copy)
    embed_units(copy, HistBackend(), m=5, layers=["pool"], progress=False)
    with pytest.raises(LensError, match="not embedded"):
        measures(copy, layers=["detect"])
    # an atlas without the exemplars of a layer, and one whose record run has not finished
    from unitlens.errors import AtlasError

    (copy / "exemplars" / "detect.safetensors").unlink()
    with pytest.raises(AtlasError, match=r"exemplars/detect.safetensors \(it does not exist\)"):
        embed_units(copy, HistBackend(), m=5, layers=["detect"], progress=False)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "status": "recording"}))
    with pytest.raises(AtlasError, match="has not finished"):
        embed_units(copy, HistBackend(), m=5, progress=False)


# ---------------------------------------------------------------------------------------------- measures
def test_measures_written_to_scores(atlases):
    res = measures(atlases["A"], layers=["detect", "pool"])
    f = res.frame.set_index(["layer", "unit"])
    # identical histograms within every unit's examples: clarity 1; max similarity 1/3 (colours) or 0 (grey)
    assert np.allclose(f.loc["detect", "clarity"].to_numpy()[:4], 1.0, atol=1e-5)
    assert np.allclose(f.loc["detect", "max_similarity"].to_numpy()[:4], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-5)
    assert res.layers.set_index("layer").loc["detect", "redundancy"] == pytest.approx(0.25, abs=1e-5)
    scores = pd.read_parquet(atlases["A"] / "scores.parquet")
    mine = scores[scores["backend"] == "lenstest"]
    assert set(mine["metric"]) == {"clarity", "polysemanticity", "max_similarity"}
    assert len(mine) == 3 * 2 * 5 and json.loads(mine["params"].iloc[0])["m"] == 5
    constant = mine[(mine["unit"] == 4)]
    assert constant["value"].isna().all()
    # measuring another layer keeps the earlier layers' rows
    measures(atlases["A"], layers=["tokens"])
    mine = pd.read_parquet(atlases["A"] / "scores.parquet").query("backend == 'lenstest'")
    assert set(mine["layer"]) == {"detect", "pool", "tokens"}


# ---------------------------------------------------------------------------------------------- activation crops
def test_input_geometry_follows_resize_and_centre_crop():
    tf = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    g = input_geometry(tf, 64, 48, (32, 32))  # resized to 42x32, then 5 px cut on the left
    assert g.ax == pytest.approx(64 / 42) and g.bx == pytest.approx(5 * 64 / 42) and g.by == 0
    assert g.to_original(0, 0, 32, 32) == (7, 0, 57, 48)
    stretch = input_geometry(lambda im: im, 50, 20, (10, 10))
    assert stretch.to_original(0, 0, 10, 10) == (0, 0, 50, 20)


def test_activation_crop_box_contains_the_planted_patch(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "patches"
    patches = {}
    for i in range(8):  # grey 64x48 images, a 12x12 red patch inside the centre crop
        img = _noisy(RGB["grey"], (64, 48), rng)
        x, y = int(rng.integers(10, 44)), int(rng.integers(0, 36))
        img[y:y + 12, x:x + 12] = _noisy(RGB["red"], (12, 12), rng)
        name = f"patch_{i}.png"
        (root / "p").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "p" / name)
        patches[name] = (x, y, x + 12, y + 12)
    for i in range(4):
        (root / "q").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_noisy(RGB["grey"], (64, 48), rng)).save(root / "q" / f"plain_{i}.png")
    model = colour_model()
    atlas = _record(model, root, tmp_path / "atlas")
    backend = HistBackend()
    full = embed_units(atlas, backend, m=4, crop="none", progress=False).store.read_layer("detect")
    res = embed_units(atlas, backend, m=4, crop="activation", model=model, progress=False, force=True)
    store = res.store
    samples = pd.read_parquet(atlas / "samples.parquet").set_index("id")
    for layer in ("detect", "pool", "tokens"):
        data = store.read_layer(layer)
        assert bool(data.has_box[0].all()), layer  # every red-unit example is cropped
        for j in range(4):
            x0, y0, x1, y1 = data.boxes[0, j].tolist()
            px0, py0, px1, py1 = patches[samples.loc[int(data.ids[0, j]), "path"].split("/")[-1]]
            assert x0 <= px0 and y0 <= py0 and x1 >= px1 and y1 >= py1, (layer, j)
            assert (x1 - x0) * (y1 - y0) < 0.35 * 64 * 48, (layer, j, (x0, y0, x1, y1))
    # the red unit's θ is redder with crops than with whole images (mostly grey background)
    red = torch.nn.functional.normalize(COLOUR_HIST["red"], dim=0)
    cropped = store.read_layer("detect")
    assert float(cropped.vectors[0] @ red) > float(full.vectors[0] @ red) + 0.2
    index = pd.read_parquet(next((atlas / "embeddings").glob("*/index.parquet")))
    assert index["x0"].notna().sum() > 0  # crops are cached with their boxes
    # the CLI cannot load a hand-built model by name: a clear error, not a crash
    out = runner.invoke(lens_app, ["embed", str(atlas), "--backend", "lenstest", "--crop", "activation",
                                   "--m", "4", "--force"])
    assert out.exit_code == 2 and "cannot load the analysed model" in out.output


# ---------------------------------------------------------------------------------------------- CLI and plots
def test_cli_end_to_end_and_errors(atlases, tmp_path):
    a = str(atlases["A"])
    out = runner.invoke(lens_app, ["search", a, "red", "--top", "3", "--backend", "lenstest"])
    assert out.exit_code == 0, out.output
    assert "detect" in out.output and "red_" in out.output
    probe = atlases["concepts"] / "green"
    out = runner.invoke(lens_app, ["search", a, "--image", str(probe), "--layers", "tokens", "--top", "2",
                                   "--format", "csv", "--table", "units"])
    assert out.exit_code == 0, out.output
    hits = pd.read_csv(io.StringIO(out.stdout))
    assert hits["unit"].iloc[0] == 1 and hits["layer"].iloc[0] == "tokens" and "green_" in hits["exemplars"].iloc[0]
    out = runner.invoke(lens_app, ["label", a, "--concepts", str(atlases["concepts"])])
    assert out.exit_code == 0 and "unexpected: 3 units" in out.output, out.output
    out = runner.invoke(lens_app, ["compare", a, str(atlases["B"])])
    assert out.exit_code == 0 and "0.75" in out.output and "3 of 12 units of A have no counterpart" in out.output
    out = runner.invoke(lens_app, ["measures", a, "--layers", "pool"])
    assert out.exit_code == 0 and "redundancy" in out.output
    out = runner.invoke(lens_app, ["embed", a, "--backend", "lenstest", "--m", "5"])
    assert out.exit_code == 0 and "already embedded" in out.output
    # errors: unknown layer, empty concept list, unreadable probe, text on a backend without a text tower
    assert "layer 'nope' is not in atlas" in runner.invoke(lens_app, ["search", a, "red", "--layers", "nope"]).output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    bad = runner.invoke(lens_app, ["label", a, "--concepts", str(empty)])
    assert bad.exit_code == 2 and "empty" in bad.output
    bad = runner.invoke(lens_app, ["search", a, "--image", str(tmp_path / "nope.png")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    bad = runner.invoke(lens_app, ["search", a])
    assert bad.exit_code == 2 and "either a text probe or probe images" in bad.output


def test_plots(atlases, tmp_path):
    import typer

    from unitlens.lens.figures import plot_lens

    label(atlases["A"], atlases["concepts"], backend=atlases["backend"])
    figures = plot_lens(atlases["A"], layer="detect", projection="pca", cards=2, out=tmp_path / "plots")
    paths = figures.paths
    names = sorted(p.name for p in paths)
    assert len(names) == 3 and names[-1] == "lens_map_detect.png"
    assert set(names[:2]) <= {f"card_detect_{u}.png" for u in (0, 1, 2)}  # labelled units only (not grey)
    for p in paths:
        with Image.open(p) as im:
            assert im.size[0] > 200 and im.size[1] > 150
    app = typer.Typer()
    app.command()(plot_lens_command)
    out = runner.invoke(app, [str(atlases["A"]), "--out", str(tmp_path / "cli"), "--layer", "pool", "--text",
                              "blue", "--projection", "pca", "--cards", "1"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "cli" / "card_pool_2.png").is_file()  # the blue unit is the most aligned


def test_cli_embed_summary_keeps_the_work_table_behind_verbose(atlases, tmp_path):
    copy = tmp_path / "A"
    shutil.copytree(atlases["A"], copy)
    plain = runner.invoke(lens_app, ["embed", str(copy), "--backend", "lenstest", "--m", "4", "--force"])
    assert plain.exit_code == 0, plain.output
    assert "work" not in plain.output and "(image, crop) keys" not in plain.output and "null (s)" not in plain.output
    store = LensStore.open(copy, "lenstest")
    assert "embedded 3 layers" in plain.output and str(store.path) in plain.output
    assert "concept examples embedded" in plain.output and "from the cache" in plain.output
    verbose = runner.invoke(lens_app, ["embed", str(copy), "--backend", "lenstest", "--m", "3", "--force",
                                       "--verbose"])
    assert verbose.exit_code == 0 and "work" in verbose.output and "(image, crop) keys" in verbose.output


def test_cli_search_and_label_print_json_and_csv(atlases):
    import io
    import json
    from pathlib import Path

    a = str(atlases["A"])
    hits = runner.invoke(lens_app, ["search", a, "red", "--top", "3", "--backend", "lenstest", "--format", "json"])
    assert hits.exit_code == 0, hits.output
    rows = json.loads(hits.stdout)["units"]["rows"]
    assert len(rows) == 3 and rows[0]["unit"] == 0 and isinstance(rows[0]["exemplars"], list)
    assert all("red_" in Path(p).name and Path(p).is_absolute() for p in rows[0]["exemplars"])  # full paths
    labels = runner.invoke(lens_app, ["label", a, "--concepts", str(atlases["concepts"]), "--format", "csv"])
    assert labels.exit_code == 0, labels.output
    blocks = {b.partition("\n")[0][2:].split(":")[0]: pd.read_csv(io.StringIO(b.partition("\n")[2]))
              for b in labels.stdout.strip().split("\n\n")}
    assert {"labels", "counts", "unexpected"} <= set(blocks)
    every = label(atlases["A"], atlases["concepts"], backend=atlases["backend"]).frame
    assert len(blocks["labels"]) == len(every) > 2  # every unit, not only the labelled ones the table shows


def test_activation_crops_of_windowed_swin_layers_stay_whole_images(tmp_path):
    """A Swin attention layer's output holds windows, not one map per image: no (wrong) boxes from it."""
    from timm.models.swin_transformer import SwinTransformer

    from unitlens.atlas import Atlas
    from unitlens.lens.crops import activation_boxes
    from unitlens.recording import record

    torch.manual_seed(0)
    net = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2,), num_heads=(2,),
                          num_classes=3).eval()
    loaded = LoadedModel("swin", net, T.Compose([T.Resize((32, 32)), T.ToTensor()]), "random", (3, 32, 32))
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    layers = ["layers.0.blocks.0.norm1", "layers.0.blocks.0.attn.qkv"]
    atlas = Atlas(record(loaded, str(tmp_path / "images"), tmp_path / "a", layers, k=2, num_workers=0,
                         progress=False).atlas.path)
    requests = {n: (atlas.layer(n), select_examples(atlas, n, 2)) for n in layers}
    notes: list[str] = []
    with pytest.warns(UserWarning, match="holds attention windows"):
        boxes = activation_boxes(loaded, atlas.dataset(), requests, progress=False, notes=notes)
    assert not bool(boxes["layers.0.blocks.0.attn.qkv"][1].any())
    assert any("layers.0.blocks.0.attn.qkv" in n and "windows" in n for n in notes)
    assert bool(boxes["layers.0.blocks.0.norm1"][1].any())  # the (B, H, W, C) map crops as usual


# ---------------------------------------------------------------------------------------------- the Lens facade
def test_lens_facade_search_label_measures_end_to_end(atlases, tmp_path):
    """``Lens`` on an embedded atlas: a text search is the brute-force ranking of the stored θ by
    a = cos(θ̂, p̂) − cos(θ̂, n̂) (p: the word's colour histogram, n: the all-ones vector of the empty templates);
    labels and measures are the closed-form ones; the store is opened once; results show in a notebook."""
    import matplotlib.figure

    from unitlens.lens import Lens, SearchResult

    copy = tmp_path / "A"
    shutil.copytree(atlases["A"], copy)
    lens = Lens(copy)  # no backend given: the atlas's only one
    assert lens.store is lens.store and lens.store.backend == "lenstest"
    assert lens.layers == ["detect", "pool", "tokens"]
    # search by text against brute force over every non-constant unit of every layer
    p = torch.nn.functional.normalize(COLOUR_HIST["red"], dim=0)
    n = torch.full((12,), 12 ** -0.5)
    expected = {}
    for layer in lens.layers:
        data = lens.store.read_layer(layer)
        theta = torch.nn.functional.normalize(data.theta, dim=1)
        for unit in torch.nonzero(~data.constant).flatten().tolist():
            expected[(layer, unit)] = float(theta[unit] @ p - theta[unit] @ n)
    res = lens.search(text="red", top=5, engine="exact")
    assert isinstance(res, SearchResult) and len(res.frame) == 5
    assert np.allclose(res.frame["a"], sorted(expected.values(), reverse=True)[:5], atol=1e-5)
    for layer, unit, a in zip(res.frame["layer"], res.frame["unit"], res.frame["a"]):
        assert a == pytest.approx(expected[(layer, int(unit))], abs=1e-5)
    assert set(zip(res.frame["layer"][:3], res.frame["unit"][:3])) == {("detect", 0), ("pool", 0), ("tokens", 0)}
    html = res._repr_html_()
    assert "<img" in html and "lenstest" in html
    # labels: the three colour detectors get their colour, grey aligns with none (a = 0 − 1/2)
    labels = lens.label(["red", "green", "blue"], layers=["detect"], write=False)
    assert labels.frame.set_index("unit")["label"].to_dict() == {0: "red", 1: "green", 2: "blue", 3: "none"}
    assert "red" in labels._repr_html_()
    # measures: identical examples per unit give clarity 1 and polysemanticity 0
    scores = lens.measures(layers=["detect"], write=False)
    detect = scores.frame.set_index("unit")
    assert np.allclose(detect.loc[[0, 1, 2, 3], "clarity"], 1.0, atol=1e-5)
    assert np.allclose(detect.loc[[0, 1, 2, 3], "polysemanticity"], 0.0, atol=1e-5)
    assert scores.options.layers == ("detect",) and "clarity" in scores._repr_html_()
    # the options each step ran with are kept with its results
    lens.measures(layers=["detect"], n_init=3)
    stored = json.loads((lens.store.path / "meta.json").read_text())
    assert stored["options"]["measures"]["n_init"] == 3 and stored["options"]["measures"]["layers"] == ["detect"]
    assert stored["layers"]["detect"]["options"]["m"] == 5 and stored["layers"]["detect"]["options"]["crop"] == "none"
    # a unit and the θ map come back as objects and matplotlib figures
    unit = lens.unit("detect", 2)
    assert torch.equal(unit.theta, lens.store.read_layer("detect").theta[2]) and len(unit.images(2)) == 2
    assert isinstance(lens.plot(layer="detect", projection="pca"), matplotlib.figure.Figure)
    with pytest.raises(LensError, match="unit 9 is not in layer detect"):
        lens.unit("detect", 9)


def test_lens_methods_have_explicit_signatures_and_docstrings():
    """Jupyter's ``?`` shows every parameter: no ``**kwargs`` in any public method or function of the lens, and a
    numpydoc docstring that lists the parameters and what comes back."""
    import inspect

    from unitlens.lens import Lens, compare, embed_units, label, measures, plot_lens, plot_unit, search

    methods = [getattr(Lens, name) for name in vars(Lens) if not name.startswith("_") and
               inspect.isfunction(getattr(Lens, name))]
    assert {m.__name__ for m in methods} >= {"embed", "search", "label", "compare", "measures", "plot", "unit"}
    for fn in [*methods, Lens.__init__, compare, embed_units, label, measures, plot_lens, plot_unit, search]:
        kinds = {p.kind for p in inspect.signature(fn).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds, fn
        doc = inspect.getdoc(fn if fn is not Lens.__init__ else Lens) or ""
        takes = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert not takes or "Parameters\n----------" in doc, fn
        assert fn is Lens.__init__ or "Returns\n-------" in doc, fn
    # keyword arguments are the fields of the options class, checked like the CLI's
    from unitlens.errors import BadInput

    with pytest.raises(BadInput, match="top"):
        search("nowhere", text="red", top=0)
