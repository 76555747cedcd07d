"""Feature visualisations: a linear unit whose optimum is known in closed form, the minimising direction, batches
equal to per-unit runs, the basis-feature objective against the projection, resume after an interruption, MIS of
visualisations against the formula on their embeddings, and bad input refused before any work. Tiny hand-built
models; 16-pixel images."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from test_basis import Tokens  # (B, C, g, g) -> a cls token (the mean) and the patch tokens
from unitlens.atlas import Atlas
from unitlens.basis import BasisOptions, basis_features, fit_basis, load_basis, record_bases
from unitlens.basis.encoder import Encoder
from unitlens.errors import AtlasError, BadInput, NotComputed
from unitlens.featviz import BasisReader, ChannelReader, FeatvizStore, featviz_atlas, visualize
from unitlens.featviz.defaults import IMAGENET_MEAN, IMAGENET_STD
from unitlens.featviz.render import Renderer
from unitlens.recording import record
from unitlens.recording.reduce import reduce_output
from unitlens.zoo import enumerate_units
from unitlens.zoo.factory import LoadedModel

FAST = {"steps": 12, "size": 16, "per_side": 2, "progress": False}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- models
class ColourUnits(nn.Module):
    """``conv``: unit 0 = the red channel, unit 1 = minus the green channel (of the normalised input)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, -1.0, 0]]).view(2, 3, 1, 1))

    def forward(self, x):
        return self.conv(x).mean((2, 3))


class TinyNet(nn.Module):
    """A seeded conv layer (B, 6, H, W), ReLU, pooling, and a linear layer on tokens (B, 1 + HW/4, 5)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.tokens = Tokens()
        self.proj = nn.Linear(6, 5)
        self.head = nn.Linear(5, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.head(self.proj(self.tokens(self.pool(self.act(self.conv(x)))))[:, 0])


def tiny_model() -> LoadedModel:
    transform = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return LoadedModel(name="tinynet", model=TinyNet().eval(), transform=transform, weights="hand-built",
                       input_size=(3, 8, 8))


def tiny_atlas(root) -> dict:
    """A recorded atlas of TinyNet (layers conv, act and proj, k = 6) on 40 random 8 x 8 images under ``root``."""
    rng = np.random.default_rng(0)
    for i in range(40):
        (root / "data" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "data" / f"c{i % 2}" / f"{i}.png")
    model = tiny_model()
    record(model, str(root / "data"), root / "atlas", enumerate_units(model.model, include=["conv", "act", "proj"]),
           k=6,
           batch_size=16, num_workers=0, progress=False)
    return {"atlas": root / "atlas", "model": model}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_atlas(tmp_path_factory.mktemp("featviz"))


@pytest.fixture
def atlas(base, tmp_path):
    shutil.copytree(base["atlas"], tmp_path / "atlas")
    return Atlas(tmp_path / "atlas")


# ---------------------------------------------------------------------------------------------- the optimum
@pytest.mark.parametrize("decorrelate,tolerance", [(False, 0.02), (True, 0.12)])
def test_a_linear_colour_unit_saturates_its_channel_up_and_empties_it_down(decorrelate, tolerance):
    """Unit 0 is the spatial mean of the normalised red channel: its maximum over images in [0, 1] is an all-red
    channel, (1 − 0.485) / 0.229, its minimum an empty one, −0.485 / 0.229; unit 1 (minus green) the reverse.

    Plain pixels reach it uniformly. In Fourier space Adam also moves the coefficients whose gradient is tiny (it
    normalises every coefficient's step), so a few pixels overshoot the other way and the image approaches the
    optimum more slowly: same direction, a looser bound, on the channel's mean."""
    res = visualize(ColourUnits(), layers=["conv"], steps=200, size=16, per_side=2, lr=0.2, transforms=False,
                    decorrelate=decorrelate, progress=False)
    t = res.table
    images = res.images.float() / 255
    for unit, channel, sign in ((0, 0, 1), (1, 1, -1)):
        m, s = IMAGENET_MEAN[channel], IMAGENET_STD[channel]
        high, low = (1 - m) / s, -m / s  # the channel's normalised value when full / empty
        best, worst = (high, low) if sign > 0 else (-low, -high)
        top = t[(t["unit"] == unit) & (t["direction"] == "top")]
        bottom = t[(t["unit"] == unit) & (t["direction"] == "bottom")]
        span = best - worst
        # close to the optimum (a sigmoid reaches 0 and 1 only in the limit), never beyond it
        assert (top["activation"] > best - tolerance * span).all() and (top["activation"] <= best + 1e-4).all()
        assert (bottom["activation"] < worst + tolerance * span).all() and \
            (bottom["activation"] >= worst - 1e-4).all()
        full, empty = (top, bottom) if sign > 0 else (bottom, top)
        assert float(images[full.index, channel].mean()) > 1 - tolerance
        assert float(images[empty.index, channel].mean()) < tolerance
        if not decorrelate:  # every pixel of the channel
            assert float(images[full.index, channel].min()) > 0.95 and float(images[empty.index, channel].max()) < 0.05


def test_the_bottom_direction_drives_a_unit_below_noise_and_the_top_above_it():
    model = TinyNet().eval()
    res = visualize(model, layers=["conv", "proj"], units="0-3", steps=60, size=32, per_side=2, lr=0.1,
                    progress=False)
    noise = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x = (noise - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    outputs = {}
    hooks = [dict(model.named_modules())[n].register_forward_hook(lambda m, i, o, n=n: outputs.update({n: o}))
             for n in ("conv", "proj")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for layer, cdim in (("conv", 1), ("proj", -1)):
        natural = reduce_output(outputs[layer], cdim)  # (32, C) the units on noise images
        t = res.table[res.table["layer"] == layer]
        for unit in range(4):
            mine = t[t["unit"] == unit]
            top = mine.loc[mine["direction"] == "top", "activation"]
            bottom = mine.loc[mine["direction"] == "bottom", "activation"]
            assert float(bottom.max()) < float(natural[:, unit].min()) <= float(natural[:, unit].max()) < \
                float(top.min()), (layer, unit)


# ---------------------------------------------------------------------------------------------- batches and seeds
def test_a_batch_of_many_units_equals_one_run_per_unit_with_the_same_seeds():
    model = TinyNet().eval()
    opts = dict(layers=["conv"], steps=15, size=16, per_side=3, diversity=0.5, seed=3, progress=False)
    together = visualize(model, units="0-3", batch_size=24, **opts)
    alone = [visualize(model, units=[u], batch_size=6, **opts) for u in range(4)]
    images = torch.cat([a.images for a in alone])
    table = pd.concat([a.table for a in alone], ignore_index=True)
    assert (together.images.int() - images.int()).abs().max() <= 1
    assert np.allclose(together.table["activation"], table["activation"], atol=2e-3)
    assert together.table[["unit", "direction", "index", "seed"]].equals(table[["unit", "direction", "index", "seed"]])
    again = visualize(model, units="0-3", batch_size=24, **opts)
    assert torch.equal(again.images, together.images)  # reproducible
    other = visualize(model, units="0-3", batch_size=24, **{**opts, "seed": 4})
    assert not torch.equal(other.images, together.images)
    # a unit's images differ from each other (their own noise and transforms)
    assert not torch.equal(together.images[0], together.images[1])


# ---------------------------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("activation", ["none", "relu", "threshold", "topk"])
@pytest.mark.parametrize("positions", ["image", "spatial"])
@pytest.mark.parametrize("shape,cdim", [((4, 6, 5, 5), 1), ((4, 9, 6), -1)])
def test_the_basis_feature_objective_equals_the_recorded_projection(activation, positions, shape, cdim):
    g = torch.Generator().manual_seed(0)
    output = torch.randn(shape, generator=g)
    C = shape[cdim]
    enc = Encoder(torch.randn(7, C, generator=g), bias=torch.randn(7, generator=g) * 0.1,
                  center=torch.randn(C, generator=g) * 0.1, activation=activation,
                  k=3 if activation == "topk" else None,
                  threshold=torch.rand(7, generator=g) * 0.5 if activation == "threshold" else None)
    units = torch.tensor([0, 6, 3, 3])
    for spatial in ("mean", "max"):
        reader = BasisReader("layer", enc, positions, cdim, spatial, "mean")
        want = basis_features(output, enc, positions, cdim, spatial, "mean")[torch.arange(4), units]
        assert torch.allclose(reader.values(output, units), want, atol=1e-5)
    channels = ChannelReader("layer", cdim, C, "max", "max").values(output, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(channels, reduce_output(output, cdim, "max", "max")[torch.arange(4), torch.arange(4)])


def test_a_derived_layer_is_optimised_as_its_basis_projection_of_the_parent(atlas, base):
    model = base["model"]
    fit_basis(atlas, "conv", "pca", BasisOptions(kind="pca", features=4, positions="spatial"), model=model,
              progress=False)
    record_bases(atlas, ["pca"], model=model, progress=False)
    run = featviz_atlas(atlas, layers=["conv::pca"], units="0-1", model=model, **FAST)
    assert run.made == {"conv::pca": [0, 1]}
    store = FeatvizStore(atlas)
    table = store.table("conv::pca")
    enc = load_basis(atlas, "conv::pca").encoder
    x = torch.stack([T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(store.image("conv::pca", f)))
                     for f in table["file"]])
    with torch.no_grad():
        parent = model.model.conv(x)
        rows = parent.flatten(2).transpose(1, 2)  # every position a row
        want = enc.encode(rows.reshape(-1, rows.shape[-1])).view(len(x), -1, 4).mean(1)
    got = want[torch.arange(len(x)), torch.tensor(table["unit"].to_numpy())]
    assert np.allclose(table["activation"], got.numpy(), atol=1e-4)
    ex = atlas.exemplars("conv::pca")
    assert np.allclose(table["natural_top"], ex.top_vals[table["unit"].tolist(), 0].numpy())
    assert np.allclose(table["natural_bottom"], ex.bottom_vals[table["unit"].tolist(), 0].numpy())


# ---------------------------------------------------------------------------------------------- the atlas result
def test_stored_visualisations_resume_after_an_interruption(atlas, base, monkeypatch, tmp_path):
    model = base["model"]
    fresh = Atlas(shutil.copytree(atlas.path, tmp_path / "fresh"))
    featviz_atlas(fresh, layers=["conv"], units="0-5", batch_size=8, model=model, **FAST)
    calls = []
    interrupt = [True]  # the second batch of the first run is interrupted, once
    real = Renderer.render

    def interrupted(self, targets, on_step=None):
        calls.append(targets[0].unit)
        if len(calls) == 2 and interrupt[0]:
            interrupt[0] = False
            raise KeyboardInterrupt
        return real(self, targets, on_step)

    monkeypatch.setattr(Renderer, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        featviz_atlas(atlas, layers=["conv"], units="0-5", batch_size=8, model=model, **FAST)
    assert sorted(FeatvizStore(atlas).table("conv")["unit"].unique()) == [0, 1]  # the first batch was kept
    calls.clear()
    run = featviz_atlas(atlas, layers=["conv"], units="0-5", batch_size=8, model=model, **FAST)
    assert calls == [2, 4] and run.made == {"conv": [2, 3, 4, 5]} and run.stored == {"conv": [0, 1]}
    mine, theirs = FeatvizStore(atlas).table("conv"), FeatvizStore(fresh).table("conv")
    assert mine.drop(columns="activation").equals(theirs.drop(columns="activation"))
    assert np.allclose(mine["activation"], theirs["activation"], atol=1e-5)
    for f in mine["file"]:
        assert np.array_equal(np.asarray(FeatvizStore(atlas).image("conv", f)),
                              np.asarray(FeatvizStore(fresh).image("conv", f)))
    calls.clear()
    again = featviz_atlas(atlas, layers=["conv"], units="0-5", batch_size=8, model=model, **FAST)
    assert calls == [] and again.made == {"conv": []}  # nothing left to do


def test_record_force_clears_the_visualisations(atlas, base):
    from unitlens.atlas.layout import clear_derived

    featviz_atlas(atlas, layers=["proj"], units=[0], model=base["model"], **FAST)
    assert FeatvizStore(atlas).layers() == ["proj"]
    assert "featviz" in clear_derived(atlas.path, images_changed=False)
    assert FeatvizStore(atlas).layers() == []
    with pytest.raises(NotComputed, match="unitlens featviz"):
        FeatvizStore(atlas).table("proj")


# ---------------------------------------------------------------------------------------------- bad input
class Detached(nn.Module):
    """``frozen`` sees a detached copy of the input: nothing it outputs has a gradient path to the image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.frozen = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) + self.frozen(x.detach()).mean((2, 3))


def _untouched(atlas: Atlas) -> bool:
    return not atlas.derived_path("featviz").exists()


@pytest.mark.parametrize("change,error,match", [
    ({"units": "0-6"}, BadInput, "unit 6 is outside layer conv, which has 6 units"),
    ({"layers": ["nope"]}, AtlasError, "layer 'nope' is not in atlas"),
    ({"steps": 0}, BadInput, "steps"),
    ({"size": 8}, BadInput, "size"),
    ({"per_side": 0}, BadInput, "per_side"),
    ({"per_side": 65}, BadInput, "per_side"),
    ({"units": "3-1"}, BadInput, "runs backwards"),
    ({"diversity": 1.0, "per_side": 1}, BadInput, "diversity"),
])
def test_bad_input_is_refused_before_any_work(atlas, base, change, error, match):
    opts = {**FAST, "layers": ["conv"], **change}
    with pytest.raises(error, match=match):
        featviz_atlas(atlas, model=base["model"], **opts)
    assert _untouched(atlas)


def test_an_atlas_whose_model_cannot_be_loaded_is_refused(atlas):
    with pytest.raises(AtlasError, match="cannot load the analysed model 'tinynet'"):
        featviz_atlas(atlas, layers=["conv"], **FAST)
    assert _untouched(atlas)


def test_a_layer_without_gradient_path_is_refused(atlas, base):
    with pytest.raises(BadInput, match="frozen.*no gradient"):
        visualize(Detached(), layers=["conv", "frozen"], **FAST)
    fit_basis(atlas, "act", "nmf", BasisOptions(kind="nmf", features=3, positions="image"), model=base["model"],
              progress=False)
    record_bases(atlas, ["nmf"], model=base["model"], progress=False)
    with pytest.raises(BadInput, match="NMF codes"):
        featviz_atlas(atlas, layers=["act::nmf"], model=base["model"], **FAST)
    assert _untouched(atlas)


def test_other_options_need_force_and_force_makes_the_layer_again(atlas, base):
    featviz_atlas(atlas, layers=["conv"], units=[0], model=base["model"], **FAST)
    with pytest.raises(BadInput, match=r"other options \(steps 12 -> 13\).*--force"):
        featviz_atlas(atlas, layers=["conv"], units=[1], model=base["model"], **{**FAST, "steps": 13})
    run = featviz_atlas(atlas, layers=["conv"], units=[1], model=base["model"], force=True, **{**FAST, "steps": 13})
    assert run.made == {"conv": [1]}
    assert FeatvizStore(atlas).table("conv")["unit"].unique().tolist() == [1]  # the old units went with --force


# ---------------------------------------------------------------------------------------------- MIS of visualisations
class PixelBackend:
    """A test embedding: 8 x 8 pixels through a fixed random projection to 16 dimensions."""

    @staticmethod
    def build(spec=None, device=None, **kw):
        from unitlens.backends.base import Backend

        class Pixels(Backend):
            name, dim = "featviztest", 16
            projection = torch.randn(192, 16, generator=torch.Generator().manual_seed(5))

            def preprocess(self, image):
                return T.ToTensor()(image.convert("RGB").resize((8, 8), Image.BILINEAR))

            def encode_images(self, batch):
                return self._finish(batch.flatten(1) @ self.projection)

        return Pixels("cpu")


@pytest.fixture
def pixel_backend():
    from unitlens.backends.base import BACKENDS

    if "featviztest" not in BACKENDS:
        BACKENDS.register("featviztest", PixelBackend.build)
    return PixelBackend.build()


def brute_mis(atlas: Atlas, layer: str, backend, n: int, k: int, tau: float) -> dict[int, tuple[float, float]]:
    """MIS and accuracy of every visualised unit, task by task from the formula, each image embedded on its own."""
    store = FeatvizStore(atlas)
    table = store.table(layer)
    ex = atlas.exemplars(layer)
    dataset = atlas.dataset()

    def emb(image):
        return torch.nn.functional.normalize(backend.encode_images(backend.preprocess(image)[None])[0], dim=0)

    out = {}
    for unit in sorted(table["unit"].unique()):
        expl = {d: [emb(img) for img in store.unit_images(layer, int(unit), d, k)] for d in ("top", "bottom")}
        ps, wins = [], []
        for i in range(n):
            qp, qn = (emb(dataset.image(int(ids[unit, n * k + i]))) for ids in (ex.top_ids, ex.bottom_ids))

            def s(q, E):
                return sum(float(q @ e) for e in E) / len(E)

            d_pos = s(qp, expl["top"]) - s(qp, expl["bottom"])
            d_neg = s(qn, expl["top"]) - s(qn, expl["bottom"])
            ps.append(1 / (1 + np.exp(-(d_pos - d_neg) / tau)))
            wins.append(d_pos - d_neg > 0)
        out[int(unit)] = (float(np.mean(ps)), float(np.mean(wins)))
    return out


def test_mis_of_visualisations_equals_the_formula_on_their_embeddings(atlas, base, pixel_backend):
    from unitlens.featviz.compare import compare_explanations
    from unitlens.featviz.scoring import score_featviz
    from unitlens.mis import score_mis

    featviz_atlas(atlas, layers=["conv", "proj"], units="0-3", model=base["model"], **FAST)
    run = score_featviz(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, tau=0.2, progress=False)
    assert run.images_embedded == 2 * 4 * 4  # two layers, four units, four images each
    scores = atlas.scores()
    for layer in ("conv", "proj"):
        want = brute_mis(atlas, layer, pixel_backend, n=2, k=2, tau=0.2)
        got = scores[(scores["layer"] == layer) & (scores["backend"] == "featviztest")]
        mis = got[got["metric"] == "mis_featviz"].set_index("unit")["value"]
        acc = got[got["metric"] == "mis_featviz_accuracy"].set_index("unit")["value"]
        assert sorted(mis.index) == [0, 1, 2, 3]  # only the visualised units have rows
        for unit, (m, a) in want.items():
            assert abs(mis[unit] - m) < 1e-5 and abs(acc[unit] - a) < 1e-9, (layer, unit)
    again = score_featviz(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, tau=0.2, progress=False)
    assert again.images_embedded == 0  # the visualisations' embeddings are kept
    assert np.allclose(again.frame["mis_featviz"], run.frame["mis_featviz"])
    # the comparison with natural exemplars pairs the same units
    with pytest.raises(NotComputed, match="no mis of backend 'featviztest'"):
        compare_explanations(atlas)
    natural = score_mis(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, tau=0.2, progress=False).frame.set_index(
        ["layer", "unit"])["mis"]
    cmp = compare_explanations(atlas)
    assert len(cmp.units) == 8 and set(cmp.layers["layer"]) == {"conv", "proj"}
    for row in cmp.units.itertuples(index=False):
        assert abs(row.mis - natural[(row.layer, row.unit)]) < 1e-9
        assert abs(row.difference - (row.mis_featviz - row.mis)) < 1e-12
    conv = cmp.layers.set_index("layer").loc["conv"]
    assert abs(conv["difference"] - cmp.units[cmp.units["layer"] == "conv"]["difference"].mean()) < 1e-12
    score_mis(atlas, backend=pixel_backend, n_tasks=2, k_expl=1, tau=0.2, progress=False)  # other tasks
    with pytest.raises(BadInput, match="different tasks"):
        compare_explanations(atlas)


def test_mis_of_visualisations_refuses_what_it_cannot_score(atlas, base, pixel_backend):
    from unitlens.featviz.scoring import score_featviz

    with pytest.raises(NotComputed, match="unitlens featviz"):
        score_featviz(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, progress=False)
    featviz_atlas(atlas, layers=["conv"], units=[0], model=base["model"], **FAST)
    with pytest.raises(NotComputed, match="proj.*unitlens featviz"):
        score_featviz(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, layers=["proj"], progress=False)
    with pytest.raises(BadInput, match="2 images per side.*k_expl=3"):
        score_featviz(atlas, backend=pixel_backend, n_tasks=1, k_expl=3, progress=False)
    with pytest.raises(BadInput, match="too small"):
        score_featviz(atlas, backend=pixel_backend, n_tasks=20, k_expl=2, progress=False)
    assert atlas.scores().empty


def test_cli_featviz_mis_and_plot(atlas, base, pixel_backend, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from unitlens.cli import app

    monkeypatch.setattr(Atlas, "load_model", lambda self: base["model"])  # a hand-built model has no loader
    runner = CliRunner()
    a = str(atlas.path)
    out = runner.invoke(app, ["featviz", a, "--layers", "conv", "--units", "0-2", "--steps", "8", "--size", "16",
                              "--per-side", "2", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert "# featviz" in out.output and "conv,3,0,3,12" in out.output
    out = runner.invoke(app, ["featviz", a, "--layers", "conv", "--units", "0-2", "--steps", "8", "--size", "16",
                              "--per-side", "2"])
    assert out.exit_code == 0 and "nothing to do" in out.output, out.output
    out = runner.invoke(app, ["mis", a, "--backend", "featviztest", "--n-tasks", "2", "--k-expl", "2"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["mis", a, "--backend", "featviztest", "--n-tasks", "2", "--k-expl", "2",
                              "--explanations", "featviz", "--format", "json"])
    assert out.exit_code == 0, out.output
    import json

    tables = json.loads(out.stdout[out.stdout.index("{"):])
    assert tables["featviz"]["rows"][0]["units"] == 3 and tables["comparison"]["rows"][0]["units"] == 3
    out = runner.invoke(app, ["plot", "featviz", a, "--out", str(tmp_path / "fig")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "fig" / "mis_featviz_conv.png").is_file()
    assert (tmp_path / "fig" / "featviz_units_conv.png").is_file()
    out = runner.invoke(app, ["plot", "featviz", a, "--out", str(tmp_path / "one"), "--units", "1", "--k", "1"])
    assert out.exit_code == 0 and (tmp_path / "one" / "featviz_units_conv.png").is_file(), out.output
    for args, message in [
        (["featviz", a, "--layers", "conv", "--units", "9"], "unit 9 is outside layer conv"),
        (["featviz", a, "--layers", "conv", "--steps", "0"], "--steps must be at least 1"),
        (["featviz", a], "name the layers"),
        (["plot", "featviz", a, "--out", str(tmp_path / "x"), "--units", "1-"], "--units is not valid"),
        (["plot", "featviz", a, "--out", str(tmp_path / "x"), "--k", "0"], "--k must be at least 1"),
        (["mis", a, "--explanations", "pictures"], "--explanations must be one of"),
    ]:
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and message in out.output, (args, out.output)


# ---------------------------------------------------------------------------------------------- explorer
def test_the_explorer_shows_visualisations_beside_exemplars_and_serves_only_listed_files(atlas, base, pixel_backend,
                                                                                        tmp_path):
    from starlette.testclient import TestClient

    from unitlens.explorer import Catalog, create_app, write_report
    from unitlens.featviz.scoring import score_featviz
    from unitlens.mis import score_mis

    featviz_atlas(atlas, layers=["conv"], units="0-1", model=base["model"], **FAST)
    score_mis(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, progress=False)
    score_featviz(atlas, backend=pixel_backend, n_tasks=2, k_expl=2, progress=False)
    scores = atlas.scores(wide=True).set_index(["layer", "unit"])
    table = FeatvizStore(atlas).table("conv")
    with TestClient(create_app(Catalog([atlas.path]))) as c:
        page = c.get("/api/atlas/atlas/layer/conv/unit/1").json()
        f = page["featviz"]
        assert [x["file"] for x in f["top"]] == table[(table["unit"] == 1) & (table["direction"] == "top")][
            "file"].tolist()
        assert abs(f["mis"] - scores.loc[("conv", 1), "mis_featviz@featviztest"]) < 1e-4
        assert abs(f["mis_exemplars"] - scores.loc[("conv", 1), "mis@featviztest"]) < 1e-4
        assert c.get("/api/atlas/atlas/layer/conv/unit/4").json()["featviz"] is None  # not visualised
        assert c.get("/api/atlas/atlas/layer/proj/unit/0").json()["featviz"] is None  # layer without any
        layer = c.get("/api/atlas/atlas/layer/conv").json()
        assert layer["columns"]["featviz_top"][:3] == ["images/0-top-0.png", "images/1-top-0.png", None]
        assert "mis_featviz" in layer["sortable"]
        image = c.get(f"/api/atlas/atlas/featviz/conv/{f['top'][0]['file']}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content == FeatvizStore(atlas).path("conv", f["top"][0]["file"]).read_bytes()
        (FeatvizStore(atlas).folder("conv") / "images" / "extra.png").write_bytes(image.content)
        for bad in ("images/extra.png", "featviz.json", "../featviz.json", "images/../../manifest.json"):
            assert c.get(f"/api/atlas/atlas/featviz/conv/{bad}").status_code == 404, bad
        assert c.get("/api/atlas/atlas").json()["figures"] == []  # visualisations are not figures
    report = write_report([atlas.path], tmp_path / "report", progress=False)
    copied = sorted(p.relative_to(tmp_path / "report") for p in (tmp_path / "report" / "featviz").rglob("*.png"))
    assert len(copied) == len(table) and report.units > 0
    assert "extra.png" not in {p.name for p in copied}


# ---------------------------------------------------------------------------------------------- studies
def test_a_study_with_the_featviz_step_compares_both_explanations(tmp_path):
    import textwrap

    from unitlens.featviz.compare import compare_explanations
    from unitlens.study import Study, run_study
    from unitlens.study.figures import plot_study

    from conftest import write_images

    rng = np.random.default_rng(5)
    data = tmp_path / "imgs"
    write_images(data, [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(24)],
                 [str(i % 3) for i in range(24)])
    backend = "timm:test_resnet+random"
    (tmp_path / "study.toml").write_text(textwrap.dedent(f"""\
        name = "fv"
        data = "{data}"
        layers = ["layer4.0.conv1"]
        steps = ["record", "mis", "featviz"]
        [record]
        k = 12
        batch_size = 8
        num_workers = 0
        [mis]
        backend = "{backend}"
        n_tasks = 2
        k_expl = 2
        [featviz]
        layers = ["layer4.0.conv1"]
        units = "0-2"
        steps = 4
        size = 32
        per_side = 2
        n_tasks = 2
        k_expl = 2
        [[entry]]
        model = "timm:test_resnet?num_classes=3&input_size=32"
        random = true
        """))
    run = run_study(tmp_path / "study.toml", tmp_path / "out", progress=False)
    steps = run.state["entries"][0]["steps"]
    assert steps["featviz"]["status"] == "done", steps
    row = Study.load(tmp_path / "out").summary().iloc[0]
    cmp = compare_explanations(Study.load(tmp_path / "out").atlas(row["entry"]), backend).units
    assert row["featviz_units"] == len(cmp) == 3
    assert abs(row["mis_featviz_mean"] - cmp["mis_featviz"].mean()) < 1e-12
    assert abs(row["featviz_difference"] - cmp["difference"].mean()) < 1e-12
    paths = plot_study(tmp_path / "out")
    assert any(p.name == "study_featviz.png" and p.is_file() for p in paths)
