"""Bases (units beyond channels): SAE recovery of a planted dictionary, exemplars against brute force, PCA against
scikit-learn, an identity matrix against the channel atlas, conv and token layers, MIS and the lens on a derived
layer, the comparison, the CLI and bad input. Tiny hand-built models and 40 images of 8 x 8 pixels."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from safetensors.torch import save_file
from torch import nn
from torchvision import transforms as T
from typer.testing import CliRunner

import unitlens.cli.common
from unitlens.atlas import Atlas
from unitlens.backends.base import BACKENDS, Backend
from unitlens.basis import (
    BasisOptions,
    Samples,
    TensorStream,
    compare_bases,
    fit_basis,
    fit_encoder,
    fit_metrics,
    list_bases,
    load_basis,
    load_matrix,
    record_bases,
)
from unitlens.basis.activations import positions_of
from unitlens.errors import AtlasError, BadInput, BasisError, BasisNotComputed, CorruptFile
from unitlens.recording import record
from unitlens.zoo import enumerate_units
from unitlens.zoo.factory import LoadedModel

from conftest import fmix32_rank

N_IMAGES = 40
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Small matrix products run far faster on one thread than on two contended ones (and tests share cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=200, soft_wrap=True))
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- tiny model
class Tokens(nn.Module):
    """(B, C, g, g) -> (B, 1 + g², C): a cls token (the mean) followed by the patch tokens."""

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        return torch.cat([t.mean(1, keepdim=True), t], 1)


class TinyNet(nn.Module):
    """A seeded conv layer (B, 6, 8, 8) and a linear layer on 17 tokens (B, 17, 5)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.tokens = Tokens()
        self.proj = nn.Linear(6, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.proj(self.tokens(self.pool(self.conv(x))))[:, 0])


def tiny_model() -> LoadedModel:
    return LoadedModel(name="tinynet", model=TinyNet().eval(), transform=T.ToTensor(), weights="hand-built",
                       input_size=(3, 8, 8))


def _images(root, n=N_IMAGES, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"c{i % 2}" / f"{i:03d}.png")
    return root


def _record(model, data, out, k=6):
    infos = enumerate_units(model.model, include=["conv", "proj"])
    record(model, str(data), out, infos, k=k, batch_size=16, num_workers=0, progress=False)
    return Atlas(out)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A recorded tiny atlas (layers conv and proj, k=6) and its data; tests copy it before writing."""
    root = tmp_path_factory.mktemp("basis")
    data = _images(root / "data")
    model = tiny_model()
    return {"atlas": _record(model, data, root / "atlas").path, "data": data, "model": model}


@pytest.fixture
def atlas(base, tmp_path):
    import shutil

    shutil.copytree(base["atlas"], tmp_path / "atlas")
    return Atlas(tmp_path / "atlas")


def layer_outputs(model, data, layer):
    """Brute force: the layer's full outputs on every image, in sample-id order (sorted paths)."""
    paths = sorted(p for p in data.rglob("*.png"))
    x = torch.stack([T.ToTensor()(Image.open(p).convert("RGB")) for p in paths])
    out = {}
    handle = dict(model.model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.update(v=o))
    with torch.no_grad():
        model.model(x)
    handle.remove()
    return out["v"]


def brute_exemplars(values: torch.Tensor, k: int):
    """Top-k / bottom-k per column of (N, F) values, ties by the seeded rank of the sample id (the reversed rank
    for the bottom direction: the atlas's total order)."""
    v = values.double().numpy()
    ranks = np.array([fmix32_rank(i) for i in range(v.shape[0])])
    top = np.stack([np.lexsort((ranks, -v[:, f]))[:k] for f in range(v.shape[1])])
    bottom = np.stack([np.lexsort((-ranks, v[:, f]))[:k] for f in range(v.shape[1])])
    return top, bottom


# ---------------------------------------------------------------------------------------------- SAE recovery
def test_planted_dictionary_is_recovered_by_the_topk_sae():
    """Activations = sparse non-negative combinations (3 of 32) of known unit directions in 16 dimensions: the TopK
    SAE's dictionary (64 atoms) holds a close match (cosine > 0.9) of most planted atoms, up to permutation."""
    g = torch.Generator().manual_seed(0)
    atoms = F.normalize(torch.randn(32, 16, generator=g), dim=1)
    idx = torch.rand(4000, 32, generator=g).argsort(1)[:, :3]
    codes = torch.zeros(4000, 32).scatter(1, idx, torch.rand(4000, 3, generator=g) + 0.5)
    x = codes @ atoms
    samples = Samples(TensorStream(x), progress=False)
    options = BasisOptions(kind="sae-topk", features=64, k=3, epochs=20, lr=1e-2, sae_batch_size=256)
    fitted = fit_encoder(samples, options, progress=False)
    learned = F.normalize(fitted.encoder.decoder, dim=1)
    best = (learned @ atoms.T).abs().amax(0)
    assert (best > 0.9).float().mean() >= 0.8, best
    metrics = fit_metrics(fitted.encoder, samples, progress=False)
    assert metrics["r2"] > 0.9 and metrics["mean_active"] <= 3
    # the stored encoder is the SAE: topk(relu(W (x - c) + b)) with exactly k active features per sample
    f = fitted.encoder.encode(x[:100])
    assert int((f != 0).sum(1).max()) <= 3 and bool((f >= 0).all())


def test_samples_stream_through_a_small_buffer_and_keep_a_uniform_reservoir():
    x = torch.arange(3000 * 4, dtype=torch.float32).reshape(3000, 4)
    small = Samples(TensorStream(x, chunk=100), buffer_bytes=500 * 4 * 4, reservoir=10000, progress=False)
    assert small.cached is None and small.reservoir.shape == (500, 4)  # the reservoir stays within the buffer
    kept = set(small.reservoir[:, 0].tolist())
    assert len(kept) == 500 and kept <= set(x[:, 0].tolist())
    seen = torch.cat(list(small.minibatches(64)))  # one epoch through the shuffle buffer: every sample once
    assert sorted(seen[:, 0].tolist()) == x[:, 0].tolist()
    assert seen[:100, 0].tolist() != x[:100, 0].tolist()  # and shuffled
    assert torch.allclose(small.mean.float(), x.mean(0)) and torch.allclose(small.var.float(), x.var(0, unbiased=False))
    blocks = list(small.blocks(700))
    assert all(b.shape[0] >= 700 for b in blocks) and sum(b.shape[0] for b in blocks) == 3000
    full = Samples(TensorStream(x, chunk=100), progress=False)
    assert full.cached is not None and torch.equal(full.cached, x)
    # the reservoir is a uniform sample: its mean is close to the data's (the buffer case draws from the stream)
    assert abs(float(small.reservoir[:, 0].mean()) / float(x[:, 0].mean()) - 1) < 0.1


# ---------------------------------------------------------------------------------------------- exemplars
@pytest.mark.parametrize("layer,positions,kind", [
    ("conv", "spatial", "sae-topk"), ("conv", "image", "random"),
    ("proj", "spatial", "pca"), ("proj", "image", "sae-batchtopk"),
])
def test_recorded_features_equal_brute_force_on_conv_and_token_layers(atlas, base, layer, positions, kind):
    """Fit on every position / token or on the per-image vector, record, and compare the derived layer's exemplars
    and statistics with the features of every image computed directly from the layer's outputs."""
    model = base["model"]
    opts = BasisOptions(kind=kind, features=8 if kind.startswith("sae") else None, k=2, epochs=2, sae_batch_size=32)
    res = fit_basis(atlas, layer, "b", opts, positions=positions, model=model, progress=False)
    out = layer_outputs(model, base["data"], layer)
    rows = positions_of(out, 1 if layer == "conv" else -1)  # (N, P, C): 64 positions or 17 tokens
    assert res.metrics["n_samples"] == (N_IMAGES * rows.shape[1] if positions == "spatial" else N_IMAGES)
    record_bases(atlas, ["b"], model=model, progress=False)
    enc = load_basis(atlas, "b").encoder
    if positions == "spatial":
        feats = enc.encode(rows.reshape(-1, rows.shape[-1])).view(N_IMAGES, rows.shape[1], -1).mean(1)
    else:
        feats = enc.encode(rows.mean(1))  # the record pass's mean over space / tokens
    name = f"{layer}::b"
    ex = Atlas(atlas.path).exemplars(name)
    top, bottom = brute_exemplars(feats, 6)
    assert np.array_equal(ex.top_ids.numpy(), top) and np.array_equal(ex.bottom_ids.numpy(), bottom)
    assert torch.allclose(ex.top_vals, torch.gather(feats.T, 1, torch.from_numpy(top)), atol=1e-5)
    units = Atlas(atlas.path).units()
    mine = units[units["layer"] == name].sort_values("unit")
    assert mine["type"].eq("Basis").all() and len(mine) == feats.shape[1]
    assert np.allclose(mine["mean"], feats.double().mean(0).numpy(), atol=1e-5)
    assert np.allclose(mine["max"], feats.amax(0).numpy(), atol=1e-5)


def test_pca_features_equal_scikit_learn(atlas, base):
    from sklearn.decomposition import PCA

    model = base["model"]
    fit_basis(atlas, "conv", "pca", kind="pca", features=4, positions="image", model=model, progress=False)
    x = layer_outputs(model, base["data"], "conv").mean((2, 3))
    want = PCA(n_components=4, svd_solver="full").fit(x.double().numpy()).transform(x.double().numpy())
    enc = load_basis(atlas, "pca").encoder
    assert np.allclose(enc.encode(x).numpy(), want, atol=1e-4)
    record_bases(atlas, ["pca"], model=model, progress=False)
    ex = Atlas(atlas.path).exemplars("conv::pca")
    top, _ = brute_exemplars(torch.from_numpy(want), 6)
    assert np.array_equal(ex.top_ids.numpy(), top)
    assert np.allclose(ex.top_vals.numpy(), np.take_along_axis(want.T, top, 1), atol=1e-4)
    # streamed through a buffer too small for the samples: IncrementalPCA, which is exact with every component
    fit_basis(atlas, "conv", "ipca", BasisOptions(kind="pca"), positions="spatial", model=model, buffer_mb=0.01,
              progress=False)
    streamed = load_basis(atlas, "ipca")
    assert streamed.meta["fit"]["estimator"] == "IncrementalPCA" and not streamed.meta["samples"]["cached"]
    pos = positions_of(layer_outputs(model, base["data"], "conv"), 1).reshape(-1, 6).double().numpy()
    exact = PCA(n_components=6, svd_solver="full").fit(pos)
    cos = np.abs((streamed.encoder.weight.double().numpy() * exact.components_).sum(1))
    assert np.all(cos > 0.999)


def test_sae_trains_on_a_stream_that_does_not_fit_the_buffer(atlas, base):
    """With a buffer of ~2,200 of the 2,560 samples, every epoch streams the model again through the shuffle buffer."""
    res = fit_basis(atlas, "conv", "s", BasisOptions(kind="sae-topk", features=8, k=2, epochs=2, sae_batch_size=32),
                    model=base["model"], buffer_mb=0.05, progress=False)
    assert not res.cached and res.metrics["n_samples"] == N_IMAGES * 64
    assert res.basis.meta["fit"]["steps"] == 2 * (N_IMAGES * 64 // 32) and np.isfinite(res.metrics["r2"])


def test_identity_matrix_reproduces_the_channel_atlas_exactly(atlas, base, tmp_path):
    np.save(tmp_path / "eye.npy", np.eye(6, dtype=np.float32))
    res = fit_basis(atlas, "conv", "id", BasisOptions(kind="file", matrix=str(tmp_path / "eye.npy")), positions="image",
                    model=base["model"], progress=False)
    assert res.metrics["r2"] == pytest.approx(1.0) and res.metrics["dead_features"] == 0
    record_bases(atlas, ["id"], model=base["model"], progress=False)
    a = Atlas(atlas.path)
    chan, ident = a.exemplars("conv"), a.exemplars("conv::id")
    for field in ("top_ids", "top_vals", "bottom_ids", "bottom_vals"):
        assert torch.equal(getattr(chan, field), getattr(ident, field)), field
    units = a.units()
    stats = ["unit", "n", "min", "max", "mean", "std", "nonfinite", "constant"]
    left = units[units["layer"] == "conv"][stats].reset_index(drop=True)
    right = units[units["layer"] == "conv::id"][stats].reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right)
    # the derived layer is an ordinary layer of the manifest, after its parent, but not part of the record config
    names = [d.name for d in a.manifest.layers]
    assert names == ["conv", "conv::id", "proj"] and a.manifest.config.layers == ("conv", "proj")
    assert a.derived_layers["conv::id"]["parent"] == "conv" and a.layer("conv::id").type == "Basis"
    assert a.identity() == Atlas(base["atlas"]).identity()  # derived results stamped before stay valid
    assert a.exemplar_file("conv::id").name.startswith("conv_id-")  # '::' is not in the file name
    # record --force makes new exemplars: the bases and derived layers of the old ones go
    record(base["model"], str(base["data"]), atlas.path, enumerate_units(base["model"].model, include=["conv", "proj"]),
           k=6, batch_size=16, num_workers=0, force=True, progress=False)
    fresh = Atlas(atlas.path)
    assert list_bases(fresh) == [] and fresh.derived_layers == {} and set(fresh.units()["layer"]) == {"conv", "proj"}


def test_user_matrix_formats_and_nonlinearities(tmp_path):
    w, b = torch.randn(7, 6), torch.randn(7)
    save_file({"weight": w, "bias": b}, str(tmp_path / "m.safetensors"))
    torch.save({"weight": w, "bias": b}, tmp_path / "m.pt")
    x = torch.randn(20, 6)
    for path in (tmp_path / "m.safetensors", tmp_path / "m.pt"):
        enc = load_matrix(path, 6, "conv", "relu")
        assert torch.allclose(enc.encode(x), torch.relu(x @ w.T + b), atol=1e-6)
        assert enc.decoder is None  # nonlinear without a decoder: no reconstruction metrics
    top = load_matrix(tmp_path / "m.pt", 6, "conv", "topk", k=2).encode(x)
    assert int((top != 0).sum(1).max()) <= 2
    linear = load_matrix(tmp_path / "m.pt", 6, "conv")
    assert torch.allclose(linear.reconstruct(linear.encode(x)), x, atol=1e-4)  # least-squares decoder


# ---------------------------------------------------------------------------------------------- later steps
class MeanColour(Backend):
    """4-d embeddings: the normalised mean RGB of an image and a constant."""

    dim = 4
    name = "basistest"

    def __init__(self, device=None):
        super().__init__("cpu")

    def preprocess(self, image):
        return T.ToTensor()(image.convert("RGB").resize((8, 8)))

    def encode_images(self, batch):
        return self._finish(torch.cat([batch.mean((2, 3)), torch.full((batch.shape[0], 1), 0.5)], 1))


BACKENDS.register("basistest", lambda spec, device=None, **kw: MeanColour())


def test_mis_lens_and_compare_work_on_a_derived_layer(atlas, base, tmp_path):
    from unitlens.lens import embed_units, measures
    from unitlens.mis import score_mis

    model = base["model"]
    fit_basis(atlas, "conv", "sae", kind="sae-topk", features=8, k=2, epochs=2, sae_batch_size=32, model=model,
              progress=False)
    fit_basis(atlas, "conv", "rnd", BasisOptions(kind="random", seed=1), model=model, progress=False)
    record_bases(atlas, ["sae", "rnd"], model=model, progress=False)
    run = score_mis(atlas, backend="basistest", n_tasks=2, k_expl=2, progress=False)
    scored = run.frame.groupby("layer")["status"].apply(lambda s: (s == "scored").sum())
    assert scored["conv::sae"] > 0 and scored["conv::rnd"] == 6
    emb = embed_units(atlas, MeanColour(), m=3, progress=False)
    assert {"conv::sae", "conv::rnd"} <= set(emb.embedded)
    theta = emb.store.read_layer("conv::rnd").theta
    assert theta.shape == (6, 4)
    # activation crops: derived layers keep whole images with a note; the model layers are cropped as before
    with pytest.warns(UserWarning, match="derived layers have no activation maps"):
        cropped = embed_units(atlas, MeanColour(), m=3, crop="activation", layers=["conv", "conv::rnd"],
                              model=model, force=True, progress=False)
    assert bool(cropped.store.read_layer("conv").has_box.any())
    assert any("derived layers have no activation maps" in n for n in cropped.notes)
    measures(atlas, "basistest")
    res = compare_bases(atlas, "conv", backend="basistest", lens_backend="basistest")
    table = res.table.set_index("basis")
    assert list(table.index) == ["channels", "sae", "rnd"]  # the atlas order: channels, then the bases recorded
    mis = run.frame[run.frame["status"] == "scored"]
    assert table.loc["rnd", "mis_mean"] == pytest.approx(mis[mis["layer"] == "conv::rnd"]["mis"].mean())
    assert table.loc["channels", "units"] == 6 and table.loc["sae", "units"] == 8
    assert not np.isnan(table.loc["sae", "clarity"]) and not np.isnan(table.loc["sae", "r2"])
    assert any("no labels" in n and "unitlens lens label" in n for n in res.notes)  # none stored: the command
    # label shares from the atlas's label store: a set of the channels and one basis, then SemanticLens labels of
    # the lens backend, which are preferred unless another method is named
    from unitlens.atlas.labels import LabelStore
    from unitlens.basis import plot_basis_comparison
    from unitlens.lens import label
    from unitlens.lens.probes import Probe

    def rows(layer, labels):
        return pd.DataFrame({"layer": layer, "unit": range(len(labels)), "label": labels, "score": 1.0})

    LabelStore(atlas).write(pd.concat([rows("conv", ["a", "none", "b", "none", "none", "none"]),
                                       rows("conv::rnd", ["a", "b", "c", "d", "none", "none"])]), "invert", probe="p")
    res = compare_bases(atlas, "conv", backend="basistest", lens_backend="basistest")
    table = res.table.set_index("basis")
    assert res.labels == "invert (probe set p)" and any("do not cover every unit set" in n for n in res.notes)
    assert table.loc["channels", "label_share"] == pytest.approx(2 / 6)
    assert table.loc["rnd", "label_share"] == pytest.approx(4 / 6) and np.isnan(table.loc["sae", "label_share"])
    probes = [Probe(name, "image", F.normalize(torch.tensor(v), dim=0)) for name, v in
              (("reddish", [1.0, 0.2, 0.2, 0.5]), ("bluish", [0.2, 0.2, 1.0, 0.5]))]
    lens_labels = label(atlas, probes, backend=MeanColour(), threshold=-1.0).frame  # every non-constant unit
    res = compare_bases(atlas, "conv", backend="basistest", lens_backend="basistest")
    assert res.labels == "semanticlens (basistest)" and "semanticlens (basistest)" in res._repr_html_()
    shares = lens_labels.groupby("layer")["label"].apply(lambda x: (x != "none").mean())
    assert res.table.set_index("basis").loc["sae", "label_share"] == pytest.approx(shares["conv::sae"]) == 1.0
    assert compare_bases(atlas, "conv", backend="basistest", labels="invert").labels == "invert (probe set p)"
    fig = plot_basis_comparison(res, tmp_path / "compare.png")
    assert (tmp_path / "compare.png").is_file() and len(fig.axes) == 3  # MIS, clarity, shares
    assert "with a semanticlens (basistest) label" in [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    # relevance and the probe pass, which run the model's own modules, leave derived layers out and refuse one
    a = Atlas(atlas.path)
    assert [i.name for i in a.select_layers(derived=False)] == ["conv", "proj"]
    with pytest.raises(AtlasError, match="derived layer"):
        a.select_layers("conv::sae", derived=False)
    from unitlens.probe import record_probe

    probe = tmp_path / "probe"
    _images(probe, n=6, seed=4)
    assert record_probe(atlas, probe, model=model, progress=False).store.layers == ["conv", "proj"]
    with pytest.raises(AtlasError, match="derived layer"):
        record_probe(atlas, probe, layers=["conv::sae"], model=model, progress=False)


def test_sparse_features_keep_only_the_images_that_activate_them(atlas, base, tmp_path):
    """A top-1 code over 12 directions is 0 on most images: its lens examples leave the ties at 0 out, and compare
    counts it as too sparse for well-posed MIS tasks (its top exemplars reach its minimum)."""
    from unitlens.basis import random_directions
    from unitlens.basis.compare import sparse_units
    from unitlens.lens import select_examples

    x = layer_outputs(base["model"], base["data"], "conv").mean((2, 3))
    save_file({"weight": random_directions(6, 12, seed=3), "center": x.mean(0)}, str(tmp_path / "w.safetensors"))
    fit_basis(atlas, "conv", "one", kind="file", matrix=str(tmp_path / "w.safetensors"), nonlinearity="topk", k=1,
              positions="image", model=base["model"], progress=False)
    record_bases(atlas, ["one"], model=base["model"], progress=False)
    feats = load_basis(atlas, "one").encoder.encode(x)
    active = (feats > 0).sum(0)
    live = active > 0  # the others are constant units (0 everywhere), flagged as such
    assert bool(((active > 0) & (active < 6)).any())  # the test has sparse features
    ex = select_examples(Atlas(atlas.path), "conv::one", m=6)
    assert torch.equal(ex.mask.sum(1)[live], active.clamp(max=6)[live])
    sparse = sparse_units(Atlas(atlas.path), "conv::one", 6)
    assert np.array_equal(sparse[live.numpy()], (active < 6)[live].numpy())
    assert not sparse_units(Atlas(atlas.path), "conv", 6).any()


def test_record_resumes_after_an_interruption(atlas, base, monkeypatch):
    from unitlens.recording.state import LayerState

    model = base["model"]
    fit_basis(atlas, "proj", "r", BasisOptions(kind="random"), model=model, progress=False)
    calls = {"n": 0}
    update = LayerState.update

    def failing(self, acts, ids):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return update(self, acts, ids)

    monkeypatch.setattr(LayerState, "update", failing)
    with pytest.raises(KeyboardInterrupt):
        record_bases(atlas, ["r"], model=model, batch_size=8, checkpoint_every=8, progress=False)
    monkeypatch.setattr(LayerState, "update", update)
    assert "proj::r" not in Atlas(atlas.path).derived_layers
    resumed = record_bases(atlas, ["r"], model=model, batch_size=8, progress=False)
    assert resumed.resumed_from == 16
    once = Atlas(atlas.path).exemplars("proj::r")
    record_bases(atlas, ["r"], model=model, batch_size=40, force=True, progress=False)
    again = Atlas(atlas.path).exemplars("proj::r")
    assert torch.equal(once.top_ids, again.top_ids) and torch.equal(once.top_vals, again.top_vals)


# ---------------------------------------------------------------------------------------------- replacing a basis
def _derive_everything(atlas, model) -> None:
    """Two recorded bases of conv with MIS scores, lens vectors (and LanceDB tables), lens measures and labels."""
    from unitlens.lens import embed_units, label, measures
    from unitlens.lens.probes import Probe
    from unitlens.mis import score_mis

    fit_basis(atlas, "conv", "rnd", BasisOptions(kind="random", seed=1), model=model, progress=False)
    fit_basis(atlas, "conv", "pca", BasisOptions(kind="pca"), model=model, progress=False)
    record_bases(atlas, ["rnd", "pca"], model=model, progress=False)
    score_mis(atlas, backend="basistest", n_tasks=2, k_expl=2, progress=False)
    embed_units(atlas, MeanColour(), m=3, progress=False)
    measures(atlas, "basistest")
    probes = [Probe(name, "image", F.normalize(torch.tensor(v), dim=0)) for name, v in
              (("reddish", [1.0, 0.2, 0.2, 0.5]), ("bluish", [0.2, 0.2, 1.0, 0.5]))]
    label(atlas, probes, backend=MeanColour(), threshold=-1.0)


def _results(path) -> dict:
    """Every per-layer result of the atlas at ``path``, by layer."""
    from unitlens.lens.store import LensStore, _list_tables

    a = Atlas(path)
    store = LensStore.open(a, "basistest")
    lens_files = sorted(p.name for p in (store.path / "layers").glob("*.safetensors"))
    return {"listed": {i.name for i in a.layers}, "scores": pd.read_parquet(a.derived_path("scores")),
            "lens": set(store.meta["layers"]), "theta": {n: store.read_layer(n).theta for n in store.layers},
            "labels": a.labels(), "measures": store.read_table("measures.parquet"),
            "files": lens_files, "tables": set(_list_tables(store._lance()))}


def test_replacing_a_recorded_basis_removes_everything_derived_from_it(atlas, base, tmp_path, monkeypatch):
    """basis fit --force on a basis with scores, lens vectors, measures and labels leaves none of them and a valid
    atlas, and the other layers' results as they were; interrupted at any write, the manifest never lists fewer
    layers than the results hold and the same command finishes the job; a damaged basis.json is replaced."""
    import shutil

    import unitlens.atlas.files
    from unitlens.atlas.layout import layer_stem
    from unitlens.atlas.verify import verify_atlas
    from unitlens.mis import load_scores

    model, gone = base["model"], "conv::rnd"
    _derive_everything(atlas, model)
    before = _results(atlas.path)
    assert gone in before["lens"] and gone in set(before["scores"]["layer"]) and gone in set(before["labels"]["layer"])
    assert gone in set(before["measures"]["layer"]) and layer_stem(gone) in before["tables"]
    pristine = tmp_path / "pristine"
    shutil.copytree(atlas.path, pristine)

    def replaced(path) -> None:
        after = _results(path)
        assert verify_atlas(path).ok, verify_atlas(path).errors.to_string()
        assert gone not in after["listed"] and gone not in after["lens"]
        for key in ("scores", "labels", "measures"):
            assert gone not in set(after[key]["layer"]), key
            old = before[key][before[key]["layer"] != gone].reset_index(drop=True)
            pd.testing.assert_frame_equal(after[key], old)  # the other layers' rows as they were
        assert after["files"] == [f for f in before["files"] if not f.startswith(layer_stem(gone))]
        assert after["tables"] == before["tables"] - {layer_stem(gone)}
        assert all(torch.equal(after["theta"][n], before["theta"][n]) for n in after["theta"])
        assert set(after["theta"]) == set(before["theta"]) - {gone}
        assert set(load_scores(path)["layer"]) == {"conv", "proj", "conv::pca"}

    res = fit_basis(atlas, "conv", "rnd", BasisOptions(kind="random", seed=2), model=model, force=True, progress=False)
    assert res.replaced and load_basis(atlas, "conv::rnd").meta["options"]["seed"] == 2
    replaced(atlas.path)

    # interrupted at every write in turn: never a manifest that lists fewer layers than the results hold
    real, calls = unitlens.atlas.files.atomic_write, {"n": 0, "stop": 0}

    def flaky(path, write):
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return real(path, write)

    monkeypatch.setattr(unitlens.atlas.files, "atomic_write", flaky)
    for stop in range(1, 30):
        copy = tmp_path / f"stop{stop}"
        shutil.copytree(pristine, copy)
        calls.update(n=0, stop=stop)
        try:
            fit_basis(copy, "conv", "rnd", BasisOptions(kind="random", seed=2), model=model, force=True, progress=False)
        except KeyboardInterrupt:
            now = _results(copy)
            assert set(now["scores"]["layer"]) <= now["listed"] and now["lens"] <= now["listed"], stop
            calls["stop"] = 0
            fit_basis(copy, "conv", "rnd", BasisOptions(kind="random", seed=2), model=model, force=True, progress=False)
            replaced(copy)
        else:
            replaced(copy)
            break
    assert stop > 5  # every write of the removal and of the new basis was interrupted once
    monkeypatch.setattr(unitlens.atlas.files, "atomic_write", real)

    # a damaged basis.json: loading that basis names it and the command that fits just it; fit --force replaces it
    damaged = tmp_path / "damaged"
    shutil.copytree(pristine, damaged)
    (damaged / "basis" / "conv" / "rnd" / "basis.json").write_text('{"layer": "co')
    fix = r"basis 'rnd' of layer conv is damaged; fit that basis again: unitlens basis fit .* --layer 'conv' " \
          r"--kind random --name rnd --force, then unitlens basis record"
    with pytest.raises(CorruptFile, match=fix):
        load_basis(damaged, "conv::rnd")
    with pytest.raises(CorruptFile, match=fix):
        record_bases(damaged, ["rnd"], model=model, force=True, progress=False)
    assert list_bases(damaged) == ["conv::pca", "conv::rnd"] and load_basis(damaged, "conv::pca").kind == "pca"
    errors = verify_atlas(damaged).errors
    assert list(errors["file"]) == ["basis/conv/rnd/basis.json"] and "--name rnd --force" in errors["detail"][0]
    fit_basis(damaged, "conv", "rnd", BasisOptions(kind="random", seed=2), model=model, force=True, progress=False)
    replaced(damaged)


def test_scores_of_a_derived_layer_the_atlas_no_longer_has_never_refuse_the_others(atlas, base):
    """Left-over rows of a removed derived layer (an older version removed the manifest entry first) are ignored
    with a warning by every reader, and a verify warning, not an error; the next score write drops them."""
    from unitlens.atlas.files import parquet_stamp, write_parquet
    from unitlens.atlas.verify import verify_atlas
    from unitlens.cli import app
    from unitlens.explorer.atlas_view import AtlasView
    from unitlens.mis import load_scores, score_mis

    score_mis(atlas, backend="basistest", n_tasks=2, k_expl=2, progress=False)
    path = atlas.derived_path("scores")
    good = pd.read_parquet(path)
    stale = good[good["layer"] == "conv"].assign(layer="conv::old")
    for stamp in (parquet_stamp(path), None):  # stamped, and written before stamps
        write_parquet(path, pd.concat([good, stale], ignore_index=True), stamp=stamp)
        with pytest.warns(UserWarning, match=r"conv::old.*ignored"):
            frame = load_scores(atlas)
        assert set(frame["layer"]) == {"conv", "proj"} and len(frame) == len(good) // 2
        findings = verify_atlas(atlas.path)
        assert findings.ok and "conv::old" in findings.table().to_string()
        with pytest.warns(UserWarning, match="conv::old"):
            out = runner.invoke(app, ["plot", "mis", str(atlas.path), "--out", str(atlas.path / "mis.png")])
            view = AtlasView(atlas.path, "atlas")
            assert view.overview() and view.layer("conv")  # the explorer shows the other layers' scores
        assert out.exit_code == 0, out.output
        assert view.mis_frame is not None and set(view.mis_frame["layer"]) == {"conv", "proj"}
    with pytest.warns(UserWarning, match="conv::old"):
        score_mis(atlas, backend="basistest", n_tasks=2, k_expl=2, layers=["proj"], progress=False)
    assert "conv::old" not in set(pd.read_parquet(path)["layer"])


def test_damage_is_named_with_the_command_that_redoes_just_that_file(atlas, base, monkeypatch):
    """A truncated encoder, lens layer, lens table or derived layer's exemplars: the error and atlas verify name the
    one file and the command that rebuilds just it (not all of basis/, lens/<backend> or the atlas), and running
    those commands makes the atlas whole again."""
    from unitlens.atlas.verify import verify_atlas
    from unitlens.cli import app
    from unitlens.lens import embed_units, measures
    from unitlens.lens.store import LensStore

    monkeypatch.setattr(Atlas, "load_model", lambda self: base["model"])
    _derive_everything(atlas, base["model"])
    a, store = str(atlas.path), LensStore.open(atlas, "basistest")
    encoder = atlas.path / "basis" / "conv" / "rnd" / "encoder.safetensors"
    lens_layer = store._layer_file("proj")
    exemplars = atlas.exemplar_file("conv::pca")
    for path in (encoder, lens_layer, exemplars, store.path / "measures.parquet"):
        path.write_bytes(path.read_bytes()[:40])
    fit = rf"fit that basis again: unitlens basis fit {a} --layer 'conv' --kind random --name rnd --force"
    with pytest.raises(CorruptFile, match=rf"encoder.safetensors .*basis 'rnd' of layer conv is damaged; {fit}"):
        load_basis(atlas, "rnd")
    out = runner.invoke(app, ["basis", "list", a])
    assert out.exit_code == 2 and out.output.startswith("error: cannot read") and "--name rnd --force" in out.output
    embed = f"unitlens lens embed {a} --backend basistest --layers 'proj' --force"
    with pytest.raises(CorruptFile, match=embed):
        LensStore.open(atlas, "basistest").read_layer("proj")
    with pytest.raises(CorruptFile, match=rf"unitlens basis record {a} 'conv::pca' --force"):
        Atlas(atlas.path).exemplars("conv::pca")
    errors = verify_atlas(atlas.path).errors.set_index("file")
    advice = {
        "basis/conv/rnd/encoder.safetensors": fit,
        f"lens/basistest/layers/{lens_layer.name}": embed,
        f"exemplars/{exemplars.name}": f"unitlens basis record {a} 'conv::pca' --force",
        "lens/basistest/measures.parquet": f"unitlens lens measures {a} --backend basistest",
    }
    assert set(errors.index) == set(advice)
    for file, command in advice.items():
        assert command in errors.loc[file, "detail"], (file, errors.loc[file, "detail"])
        assert "record the atlas again" not in errors.loc[file, "detail"]
        assert f"delete {atlas.path / 'lens'}" not in errors.loc[file, "detail"]
    # a damaged result stops a removal before it changes anything, naming that file and its fix
    with pytest.raises(CorruptFile, match=f"measures.parquet.*unitlens lens measures {a} --backend basistest"):
        fit_basis(atlas, "conv", "rnd", kind="random", seed=1, model=base["model"], force=True, progress=False)
    assert "conv::rnd" in Atlas(atlas.path).derived_layers and set(verify_atlas(atlas.path).errors["file"]) == \
        set(advice)
    # the named commands redo just those files, and the atlas is whole again
    embed_units(atlas, MeanColour(), m=3, layers=["proj"], force=True, progress=False)
    measures(atlas, "basistest")
    fit_basis(atlas, "conv", "rnd", kind="random", seed=1, model=base["model"], force=True, progress=False)
    record_bases(atlas, ["conv::pca"], model=base["model"], force=True, progress=False)
    assert verify_atlas(atlas.path).ok, verify_atlas(atlas.path).errors.to_string()


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_anything_is_stored(atlas, base, tmp_path):
    model = base["model"]
    with pytest.raises(AtlasError, match="layer 'nope' is not in atlas"):
        fit_basis(atlas, "nope", "x", BasisOptions(kind="pca"), model=model, progress=False)
    np.save(tmp_path / "wrong.npy", np.ones((5, 7), dtype=np.float32))
    with pytest.raises(BadInput, match=r"shape \(5, 7\).*\(N, 6\)"):
        fit_basis(atlas, "conv", "x", BasisOptions(kind="file", matrix=str(tmp_path / "wrong.npy")), model=model,
                  progress=False)
    nan = np.eye(6, dtype=np.float32)
    nan[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(BasisError, match="NaN"):
        fit_basis(atlas, "conv", "x", BasisOptions(kind="file", matrix=str(tmp_path / "nan.npy")), model=model,
                  progress=False)
    np.save(tmp_path / "huge.npy", np.full((6, 6), 3e38, dtype=np.float32))  # finite, but its features are inf
    with pytest.raises(BasisError, match="NaN or inf features"):
        fit_basis(atlas, "conv", "x", BasisOptions(kind="file", matrix=str(tmp_path / "huge.npy")), model=model,
                  progress=False)
    with pytest.raises(BasisError, match="NaN or inf"):
        fit_encoder(Samples(TensorStream(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])), progress=False),
                    BasisOptions(kind="pca"))
    with pytest.raises(BadInput, match=r"kind \(--kind\) must be one of"):
        BasisOptions(kind="svd")
    with pytest.raises(BadInput, match="basis name"):
        fit_basis(atlas, "conv", "a::b", BasisOptions(kind="pca"), model=model, progress=False)
    assert list_bases(atlas) == []
    fit_basis(atlas, "conv", "p", BasisOptions(kind="pca"), model=model, progress=False)
    with pytest.raises(BasisError, match="--force"):
        fit_basis(atlas, "conv", "p", BasisOptions(kind="pca", features=3), model=model, progress=False)
    record_bases(atlas, ["p"], model=model, progress=False)
    with pytest.raises(BasisError, match="already recorded.*--force"):
        record_bases(atlas, ["p"], model=model, progress=False)
    res = fit_basis(atlas, "conv", "p", BasisOptions(kind="pca", features=3), model=model, force=True, progress=False)
    assert res.replaced and "conv::p" not in Atlas(atlas.path).derived_layers  # stale features went with it
    assert load_basis(atlas, "p").encoder.features == 3
    with pytest.raises(BasisNotComputed, match="no basis 'q'"):
        record_bases(atlas, ["q"], model=model, progress=False)
    with pytest.raises(BasisError, match="non-negative"):
        fit_basis(atlas, "conv", "n", BasisOptions(kind="nmf"), model=model, progress=False)  # signed conv outputs


def test_nan_activations_are_reported(tmp_path):
    class NaNNet(TinyNet):
        def forward(self, x):
            h = self.conv(x)
            h = torch.where(x[:, :1].mean((1, 2, 3), keepdim=True) > 0.55, h * float("nan"), h)
            return self.head(self.proj(self.tokens(self.pool(h)))[:, 0])

    model = LoadedModel(name="nannet", model=NaNNet().eval(), transform=T.ToTensor(), weights="hand-built",
                        input_size=(3, 8, 8))
    data = _images(tmp_path / "data", n=12, seed=3)
    # make sure at least one image is bright enough to turn NaN
    Image.fromarray(np.full((8, 8, 3), 250, dtype=np.uint8)).save(data / "c0" / "bright.png")
    with pytest.warns(UserWarning, match="NaN or inf activations"):
        a = _record(model, data, tmp_path / "atlas", k=2)
    with pytest.raises(BasisError, match="non-finite activations"):
        fit_basis(a, "proj", "x", BasisOptions(kind="pca"), model=model, progress=False)
    assert list_bases(a) == []


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_fit_record_list_compare_and_errors(atlas, base, monkeypatch, tmp_path):
    from unitlens.cli import app
    from unitlens.mis import score_mis

    monkeypatch.setattr(Atlas, "load_model", lambda self: base["model"])  # a hand-built model has no loader
    a = str(atlas.path)
    out = runner.invoke(app, ["basis", "fit", a, "--layer", "conv", "--kind", "random", "--name", "rnd"])
    assert out.exit_code == 0, out.output
    assert "basis rnd: random of conv" in out.output and "unitlens basis record" in out.output
    out = runner.invoke(app, ["basis", "record", a, "rnd"])
    assert out.exit_code == 0 and "conv::rnd" in out.output, out.output
    out = runner.invoke(app, ["basis", "list", a, "--format", "csv"])
    assert out.exit_code == 0, out.output
    listed = pd.read_csv(io.StringIO(out.stdout.split("\n", 1)[1])).set_index("basis").loc["conv::rnd"]
    assert bool(listed["recorded"]) and listed["features"] == 6 and listed["r2"] == pytest.approx(1.0, abs=1e-5)
    score_mis(atlas, backend="basistest", n_tasks=2, k_expl=2, progress=False)
    figure = tmp_path / "cmp.png"
    out = runner.invoke(app, ["basis", "compare", a, "--layer", "conv", "--backend", "basistest", "--out",
                              str(figure)])
    assert out.exit_code == 0, out.output
    assert figure.is_file() and "mis_mean" in out.output and "channels" in out.output
    for args, message in [
        (["basis", "fit", a, "--layer", "nope", "--kind", "pca", "--name", "x"], "not in atlas"),
        (["basis", "fit", a, "--layer", "conv", "--kind", "random", "--name", "rnd"], "--force"),
        (["basis", "record", a, "rnd"], "--force"),
        (["basis", "compare", a, "--layer", "proj"], "no recorded basis"),
    ]:
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and message in out.output, (args, out.output)
