"""The record pass against brute force on hand-built units; batch-size invariance; resume; bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from unitlens.atlas import Atlas
from unitlens.data import load_dataset
from unitlens.errors import AtlasError, BadInput
from unitlens.recording import LayerState, record
from unitlens.recording.reduce import reduce_output
from unitlens.recording.state import decode, encode, rank_ids, tie_rank
from unitlens.zoo import enumerate_units

from conftest import ColourBackend, ExactNet, fmix32_rank, to_int_tensor


def brute_force(model, data, layer_names):
    """All activations of all samples, kept in full: (n, C) per layer, spatially averaged."""
    acts = {n: [] for n in layer_names}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: acts[n].append(
        o.flatten(2).mean(-1) if o.ndim == 4 else o)) for n in layer_names]
    with torch.no_grad():
        for i in range(len(data)):
            model(data[i][0][None])
    for h in hooks:
        h.remove()
    return {n: torch.cat(v).double().numpy() for n, v in acts.items()}


def expected_order(values: np.ndarray, k: int, largest: bool, seed: int = 0) -> np.ndarray:
    """Sample ids sorted by value (descending if largest), ties by the seeded rank, first k: per unit (C, k)."""
    ids = np.arange(values.shape[0])
    def key(i, v):  # the bottom direction breaks ties by the reversed rank
        return (-v[i], fmix32_rank(int(i), seed)) if largest else (v[i], -fmix32_rank(int(i), seed))

    return np.stack([np.array(sorted(ids, key=lambda i: key(i, v))[:k]) for v in values.T])


def read_all(atlas: Atlas) -> tuple[dict, pd.DataFrame]:
    ex = {info.name: atlas.exemplars(info.name) for info in atlas.layers}
    return ex, atlas.units()


def assert_same_atlas(a: Atlas, b: Atlas) -> None:
    ex_a, units_a = read_all(a)
    ex_b, units_b = read_all(b)
    for name in ex_a:
        for field in ("top_ids", "top_vals", "bottom_ids", "bottom_vals"):
            assert torch.equal(getattr(ex_a[name], field), getattr(ex_b[name], field)), (name, field)
    pd.testing.assert_frame_equal(units_a, units_b, check_exact=True)


def test_record_matches_brute_force(exact_model, random_images, tmp_path):
    layers = enumerate_units(exact_model.model, skip_first_last=False)
    result = record(exact_model, str(random_images), tmp_path / "atlas", layers, k=12, batch_size=7,
                    merge_every=10, progress=False, num_workers=0)
    data = load_dataset(str(random_images), to_int_tensor)
    truth = brute_force(exact_model.model, data, [i.name for i in layers])
    units = result.atlas.units()
    for info in layers:
        values = truth[info.name]
        ex = result.atlas.exemplars(info.name)
        np.testing.assert_array_equal(ex.top_ids.numpy(), expected_order(values, 12, largest=True))
        np.testing.assert_array_equal(ex.bottom_ids.numpy(), expected_order(values, 12, largest=False))
        np.testing.assert_array_equal(ex.top_vals.numpy(), np.take_along_axis(values.T, ex.top_ids.numpy(), 1))
        rows = units[units.layer == info.name].sort_values("unit")
        np.testing.assert_allclose(rows["mean"], values.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rows["std"], values.std(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(rows["min"], values.min(0).astype(np.float32))
        np.testing.assert_array_equal(rows["max"], values.max(0).astype(np.float32))
        np.testing.assert_array_equal(rows["constant"], (values.max(0) - values.min(0)) < 1e-8)
    conv = units[units.layer == "conv"].set_index("unit")
    assert conv.loc[2, "constant"] and not conv.drop(index=2)["constant"].any()
    # the red unit's top exemplar is the reddest image, and the -red unit's bottom exemplar is the same image
    reddest = int(np.argmax([np.asarray(data.image(i))[..., 0].mean() for i in range(len(data))]))
    ex = result.atlas.exemplars("conv")
    assert ex.top_ids[0, 0] == reddest and ex.bottom_ids[1, 0] == reddest


def test_ties_follow_the_seeded_rank(exact_model, random_images, tmp_path):
    """The fixture holds two triples of identical images: wherever they tie, the lower tie rank comes first."""
    result = record(exact_model, str(random_images), tmp_path / "a", k=60, batch_size=16, progress=False,
                    num_workers=0, layers=enumerate_units(exact_model.model, skip_first_last=False))
    data = result.atlas.dataset()
    by_content: dict[bytes, list[int]] = {}
    for i in range(len(data)):
        by_content.setdefault(np.asarray(data.image(i)).tobytes(), []).append(i)
    groups = [ids for ids in by_content.values() if len(ids) > 1]
    assert sorted(map(len, groups)) == [3, 3]
    ex = result.atlas.exemplars("conv")
    for row in ex.top_ids.tolist():
        for group in groups:
            assert [i for i in row if i in group] == sorted(group, key=fmix32_rank)
    for row in ex.bottom_ids.tolist():  # the bottom direction: the reversed rank
        for group in groups:
            assert [i for i in row if i in group] == sorted(group, key=fmix32_rank, reverse=True)


@pytest.mark.parametrize("batch_size,merge_every", [(1, 1), (5, 7), (64, 512), (3, 16)])
def test_any_batch_size_gives_the_identical_atlas(exact_model, random_images, tmp_path, batch_size, merge_every):
    layers = enumerate_units(exact_model.model, skip_first_last=False)
    ref = record(exact_model, str(random_images), tmp_path / "ref", layers, k=9, batch_size=13,
                 progress=False, num_workers=0)
    other = record(exact_model, str(random_images), tmp_path / f"b{batch_size}", layers, k=9,
                   batch_size=batch_size, checkpoint_every=batch_size * 2, merge_every=merge_every,
                   progress=False, num_workers=0)
    assert_same_atlas(ref.atlas, other.atlas)


class Interrupt:
    """A transform that raises KeyboardInterrupt at one sample, once, like a user pressing Ctrl-C."""

    def __init__(self, at: int):
        self.at, self.fired, self.seen = at, False, 0

    def __call__(self, img):
        self.seen += 1
        if self.seen > self.at and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return to_int_tensor(img)


def test_interrupted_run_resumes_to_the_same_atlas(exact_model, random_images, tmp_path):
    layers = enumerate_units(exact_model.model, skip_first_last=False)
    full = record(exact_model, str(random_images), tmp_path / "full", layers, k=9, batch_size=4,
                  progress=False, num_workers=0)
    interrupt = Interrupt(at=37)
    flaky = type(exact_model)(**{**exact_model.__dict__, "transform": interrupt})
    with pytest.raises(KeyboardInterrupt):
        record(flaky, str(random_images), tmp_path / "resumed", layers, k=9, batch_size=4, checkpoint_every=8,
               merge_every=12, progress=False, num_workers=0)
    with pytest.raises(AtlasError, match="has not finished"):
        Atlas(tmp_path / "resumed").units()
    again = record(flaky, str(random_images), tmp_path / "resumed", layers, k=9, batch_size=4,
                   checkpoint_every=8, merge_every=12, progress=False, num_workers=0)
    assert again.resumed_from == 36  # the last whole batch before the interrupt
    assert interrupt.seen == 38 + (60 - 36)  # nothing before the checkpoint was read again
    assert_same_atlas(full.atlas, again.atlas)
    assert not (tmp_path / "resumed" / "record_state.safetensors").exists()


@pytest.mark.parametrize("micro_batch", [1, 3])
def test_micro_batches_give_the_identical_atlas(exact_model, random_images, tmp_path, micro_batch):
    """The forward runs on slices of each batch (for cache locality on a CPU); the staged slices fold together."""
    layers = enumerate_units(exact_model.model, skip_first_last=False)
    whole = record(exact_model, str(random_images), tmp_path / "whole", layers, k=9, batch_size=16, micro_batch=16,
                   progress=False, num_workers=0)
    sliced = record(exact_model, str(random_images), tmp_path / "sliced", layers, k=9, batch_size=16,
                    micro_batch=micro_batch, progress=False, num_workers=0)
    assert_same_atlas(whole.atlas, sliced.atlas)


def test_ctrl_c_in_the_middle_of_a_forward_or_a_commit_resumes_exactly(exact_model, random_images, tmp_path,
                                                                       monkeypatch):
    """Ctrl-C lands after the early layers ran (the batch must not count) or while the batch is being folded into
    the layers' states (the fold must finish first): both resume to the uninterrupted atlas, n unchanged."""
    import signal

    layers = enumerate_units(exact_model.model, skip_first_last=False)
    kw = dict(k=9, batch_size=4, checkpoint_every=8, merge_every=12, progress=False, num_workers=0)
    full = record(exact_model, str(random_images), tmp_path / "full", layers, **kw)
    calls = {"conv": 0}

    def ctrl_c_in_forward(_module, _inputs, _output):
        calls["conv"] += 1
        if calls["conv"] == 7:  # batch 6 (after the check's forward): the stem has run, the conv is interrupted
            raise KeyboardInterrupt

    handle = exact_model.model.conv.register_forward_hook(ctrl_c_in_forward)
    with pytest.raises(KeyboardInterrupt):
        record(exact_model, str(random_images), tmp_path / "a", layers, **kw)
    handle.remove()
    again = record(exact_model, str(random_images), tmp_path / "a", layers, **kw)
    assert again.resumed_from == 20
    assert_same_atlas(full.atlas, again.atlas)
    assert again.atlas.units()["n"].eq(60).all()
    # a real SIGINT while the batch is being folded into the second layer's state
    original, folds = LayerState.update, {"n": 0}

    def update_then_sigint(self, acts, ids):
        original(self, acts, ids)
        folds["n"] += 1
        if folds["n"] == 3 * 7 + 1:  # batch 8, after the first of its three layers
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(LayerState, "update", update_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        record(exact_model, str(random_images), tmp_path / "b", layers, **kw)
    monkeypatch.setattr(LayerState, "update", original)
    again = record(exact_model, str(random_images), tmp_path / "b", layers, **kw)
    assert again.resumed_from == 32  # the folded batch 8 (samples 28-31) counts: saved after it, not inside it
    assert_same_atlas(full.atlas, again.atlas)


def test_finished_atlas_is_a_noop_unless_forced(exact_model, random_images, tmp_path):
    layers = enumerate_units(exact_model.model, skip_first_last=False)
    first = record(exact_model, str(random_images), tmp_path / "a", layers, k=5, progress=False, num_workers=0)
    mtime = (tmp_path / "a" / "units.parquet").stat().st_mtime_ns
    again = record(exact_model, str(random_images), tmp_path / "a", layers, k=5, progress=False, num_workers=0)
    assert again.already_complete and (tmp_path / "a" / "units.parquet").stat().st_mtime_ns == mtime
    with pytest.raises(AtlasError, match="differs in: k"):
        record(exact_model, str(random_images), tmp_path / "a", layers, k=6, progress=False, num_workers=0)
    forced = record(exact_model, str(random_images), tmp_path / "a", layers, k=6, force=True, progress=False,
                    num_workers=0)
    assert not forced.already_complete and forced.atlas.exemplars("conv").k == 6
    # results derived from the old exemplars are removed; embeddings of the same images are kept
    for derived in ("scores.parquet", "lens/x/theta.safetensors", "embeddings/b/index.parquet"):
        (tmp_path / "a" / derived).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a" / derived).write_text("old")
    record(exact_model, str(random_images), tmp_path / "a", layers, k=7, force=True, progress=False, num_workers=0)
    assert not (tmp_path / "a" / "scores.parquet").exists() and not (tmp_path / "a" / "lens").exists()
    assert (tmp_path / "a" / "embeddings/b/index.parquet").exists()
    (random_images / "c0" / "extra.png").write_bytes((random_images / "c0" / "img_0000.png").read_bytes())
    record(exact_model, str(random_images), tmp_path / "a", layers, k=7, force=True, progress=False, num_workers=0)
    # other images: the embedding cache stays, as its keys are the images' content hashes, not sample ids
    assert (tmp_path / "a" / "embeddings/b/index.parquet").exists()
    assert first.atlas.manifest.config.weights_hash == forced.atlas.manifest.config.weights_hash


def test_bad_inputs(exact_model, random_images, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        record(exact_model, str(tmp_path / "empty"), tmp_path / "x", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        record(exact_model, str(tmp_path / "nowhere"), tmp_path / "x", progress=False)
    (random_images / "c0" / "broken.png").write_bytes(b"not an image")
    (random_images / "c1" / "truncated.png").write_bytes((random_images / "c1" / "img_0001.png").read_bytes()[:40])
    with pytest.warns(UserWarning, match="broken.png") as caught:
        result = record(exact_model, str(random_images), tmp_path / "y", k=5, progress=False, num_workers=0,
                        layers=enumerate_units(exact_model.model, skip_first_last=False))
    assert any("truncated.png" in str(w.message) for w in caught)
    assert result.n_skipped == 2 and result.n_images == 62
    samples = result.atlas.samples()
    assert sorted(samples[samples.skipped]["path"].str.rsplit("/", n=1).str[-1]) == ["broken.png", "truncated.png"]
    assert not set(samples[samples.skipped]["id"]) & set(result.atlas.exemplars("conv").top_ids.flatten().tolist())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(AtlasError, match="not an atlas"):
        record(exact_model, str(random_images), tmp_path / "junk", progress=False, num_workers=0)


def test_nonfinite_activations_are_counted_and_kept_out():
    state = LayerState(width=2, k=3)
    acts = torch.tensor([[1.0, float("nan")], [2.0, 5.0], [float("inf"), 4.0], [0.5, 3.0]])
    state.update(acts, torch.arange(4))
    stats = state.stats()
    assert stats["nonfinite"].tolist() == [1, 1]
    assert stats["max"].tolist() == [2.0, 5.0] and stats["min"].tolist() == [0.5, 3.0]
    assert stats["mean"].tolist() == pytest.approx([3.5 / 3, 4.0])
    ex = state.exemplars()
    assert ex["top_ids"][1].tolist() == [1, 2, 3] and ex["bottom_ids"][0].tolist() == [3, 0, 1]
    assert ex["top_vals"][0].tolist() == [2.0, 1.0, 0.5] and ex["bottom_vals"][1].tolist() == [3.0, 4.0, 5.0]


class PoisonConv(nn.Conv2d):
    """A 1x1 conv whose unit 1 is NaN on every image and unit 3 is +inf on images with a bright red corner."""

    def forward(self, x):
        h = super().forward(x)
        h[:, 1] = float("nan")
        return h.index_put((torch.nonzero(x[:, 0, 0, 0] > 200).flatten(), torch.tensor(3)), torch.tensor(float("inf")))


class NaNUnitNet(ExactNet):
    """ExactNet with the poisoned conv."""

    def __init__(self):
        super().__init__()
        conv = PoisonConv(3, 5, 1, bias=False)
        conv.weight = self.conv.weight
        self.conv = conv


def test_record_counts_nonfinite_units_apart_from_constant_ones(random_images, tmp_path):
    """A unit that is NaN everywhere is non-finite, not constant; the pass warns once naming the layer, and MIS and
    the lens keep such units out."""
    from unitlens.zoo.factory import LoadedModel

    model = LoadedModel(name="nannet", model=NaNUnitNet().eval(), transform=to_int_tensor, weights="hand-built",
                        input_size=(3, 8, 8))
    layers = enumerate_units(model.model, skip_first_last=False, include=["stem", "conv"])
    data = load_dataset(str(random_images), to_int_tensor)
    bright = sum(float(data[i][0][0, 0, 0]) > 200 for i in range(len(data)))
    assert 0 < bright < len(data)  # the test has images of both kinds
    with pytest.warns(UserWarning, match=r"non-finite") as caught:
        result = record(model, str(random_images), tmp_path / "atlas", layers, k=5, batch_size=16, progress=False,
                        num_workers=0)
    nonfinite = [w for w in caught if "non-finite" in str(w.message)]
    assert len(nonfinite) == 1 and "conv" in str(nonfinite[0].message) and "stem" not in str(nonfinite[0].message)
    units = result.atlas.units().set_index(["layer", "unit"])
    assert units.loc[("conv", 1), "nonfinite"] == len(data) and not units.loc[("conv", 1), "constant"]
    assert units.loc[("conv", 3), "nonfinite"] == bright and not units.loc[("conv", 3), "constant"]
    assert units.loc[("conv", 2), "constant"] and units.loc[("conv", 2), "nonfinite"] == 0  # truly constant
    assert result.atlas.manifest.n_constant == 1 and result.atlas.manifest.n_nonfinite == 2
    summary = result.atlas.summary().set_index("layer")
    assert summary.loc["conv", "constant"] == 1 and summary.loc["conv", "nonfinite"] == 2
    from unitlens.mis.scoring import unit_status

    status = unit_status(result.atlas.units()).to_numpy()
    assert list(status[-5:]) == ["scored", "nonfinite", "constant", "nonfinite", "scored"]
    from unitlens.lens import embed_units

    store = embed_units(result.atlas, ColourBackend(), m=3, layers=["conv"], progress=False).store
    assert store.read_layer("conv").constant.tolist() == [False, True, True, True, False]  # the lens leaves them out


def test_keys_decode_to_values_and_ids_in_total_order():
    values = torch.tensor([0.0, -0.0, 1.5, -1.5, float("inf"), float("-inf"), 1e-38, -3e38, 2.5, 2.5])
    ids = torch.tensor([4, 9, 0, 1, 2, 3, 5, 6, 8, 7])
    keys = encode(values, ids)
    decoded_values, decoded_ids = decode(keys)
    assert torch.equal(decoded_ids, ids) and torch.equal(decoded_values, values + 0.0)
    order = keys.argsort(descending=True).tolist()
    expected = sorted(range(10), key=lambda i: (-values[i].item(), fmix32_rank(ids[i].item())))
    assert order == expected
    for seed in (0, 3):  # the tie rank is a bijection with an exact inverse, for any seed
        many = torch.cat([torch.arange(5000), torch.tensor([2**31 - 1, 123456789])])
        ranks = tie_rank(many, seed)
        assert ranks.unique().numel() == many.numel() and torch.equal(rank_ids(ranks, seed), many)
        assert ranks.tolist()[:50] == [fmix32_rank(i, seed) for i in range(50)]
        assert torch.equal(decode(encode(values, ids, seed), seed)[1], ids)
        reversed_keys = (encode(values, ids, seed) & ~0xFFFFFFFF) | tie_rank(ids, seed)  # the bottom layout
        assert torch.equal(decode(reversed_keys, seed, reverse=True)[1], ids)


def test_ties_are_a_seeded_random_draw_not_the_lowest_ids(tmp_path):
    """A dead unit (all exactly 0) keeps k of its 400 tied samples: with id order they would be 0..k-1, the first
    folder; the seeded rank spreads them over the whole dataset, the same for every batch size, and the count of
    tied exemplars is recorded."""
    from unitlens.zoo.factory import LoadedModel

    from conftest import write_images

    class Dead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                self.conv.weight[1, 0] = 1.0  # unit 1 = red: distinct values

        def forward(self, x):
            return self.conv(x)

    rng = np.random.default_rng(1)
    write_images(tmp_path / "img", [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(400)])
    model = LoadedModel(name="dead", model=Dead().eval(), transform=to_int_tensor, weights="hand-built",
                        input_size=(3, 4, 4))
    layers = enumerate_units(model.model, include=["conv"], skip_first_last=False)
    a = record(model, str(tmp_path / "img"), tmp_path / "a", layers, k=20, batch_size=7, progress=False, num_workers=0)
    b = record(model, str(tmp_path / "img"), tmp_path / "b", layers, k=20, batch_size=64, merge_every=33,
               progress=False, num_workers=0)
    ex = a.atlas.exemplars("conv")
    order = sorted(range(400), key=lambda i: fmix32_rank(i))
    assert ex.top_ids[0].tolist() == order[:20] and ex.bottom_ids[0].tolist() == order[::-1][:20]
    assert not set(order[:20]) & set(order[-20:])  # the top and bottom draws of the tied samples never meet
    assert max(order[:20]) > 200 and torch.equal(ex.bottom_ids, b.atlas.exemplars("conv").bottom_ids)
    units = a.atlas.units().set_index("unit")
    assert units.loc[0, "bottom_tied"] == 20 and units.loc[0, "top_tied"] == 20
    assert units.loc[1, "top_tied"] == 0 or units.loc[1, "top_tied"] > 1  # only real ties are counted
    other = record(model, str(tmp_path / "img"), tmp_path / "c", layers, k=20, tie_seed=5, progress=False,
                   num_workers=0)
    assert other.atlas.exemplars("conv").top_ids[0].tolist() == sorted(range(400),
                                                                       key=lambda i: fmix32_rank(i, 5))[:20]


def test_expanding_affine_layers_are_reduced_from_their_input():
    """A 1x1 expansion conv and a token MLP's first linear layer: W·mean(x) + b equals the mean of the output (to
    float rounding); the record pass takes that path, and still reads the output where the input is larger or the
    layer is not affine at every position (3x3 conv, 1x1 with stride)."""
    from unitlens.recording.reduce import input_affine, mean_from_input

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 48, 1)
    x = torch.randn(5, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mean_from_input(x, 1, input_affine(conv)), conv(x).mean((2, 3)), rtol=1e-5, atol=1e-6)
    fc = torch.nn.Linear(16, 64)
    t = torch.randn(3, 7, 16)
    torch.testing.assert_close(mean_from_input(t, -1, input_affine(fc)), fc(t).mean(1), rtol=1e-5, atol=1e-6)
    assert input_affine(torch.nn.Conv2d(8, 48, 3, padding=1)) is None
    assert input_affine(torch.nn.Conv2d(8, 48, 1, stride=2)) is None
    assert input_affine(torch.nn.Conv2d(8, 48, 1, groups=2)) is None

    class Expand(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = conv
            self.dw = torch.nn.Conv2d(48, 48, 3, padding=1, groups=48)
            self.pwl = torch.nn.Conv2d(48, 8, 1)

        def forward(self, z):
            return self.pwl(self.dw(self.pw(z)))

    from unitlens.recording.recorder import Recorder

    net = Expand().eval()
    layers = enumerate_units(net, skip_first_last=False)
    recorder = Recorder(net, layers, k=3, spatial="mean", tokens="mean", device="cpu")
    assert set(recorder.affine) == {"pw", "pwl"}  # pwl's input is larger than its output: read directly
    with torch.inference_mode():
        recorder.run(net, x, torch.arange(5))
        staged = {name: torch.cat(parts) for name, parts in recorder.staged.items()}
    recorder.close()
    with torch.inference_mode():
        want = {"pw": net.pw(x).mean((2, 3)), "dw": net.dw(net.pw(x)).mean((2, 3)), "pwl": net(x).mean((2, 3))}
    for name, value in want.items():
        torch.testing.assert_close(staged[name], value, rtol=1e-5, atol=1e-6)


def test_token_and_spatial_reductions():
    x = torch.randn(2, 5, 7)  # (B, T, C)
    torch.testing.assert_close(reduce_output(x, -1), x.mean(1))
    torch.testing.assert_close(reduce_output(x, -1, tokens="cls"), x[:, 0])
    torch.testing.assert_close(reduce_output(x, -1, tokens="max"), x.amax(1))
    m = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(reduce_output(m, 1), m.mean((2, 3)))
    torch.testing.assert_close(reduce_output(m, 1, spatial="max"), m.amax((2, 3)))
    nhwc_map = m.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(reduce_output(nhwc_map, 1), m.mean((2, 3)))
    torch.testing.assert_close(reduce_output(nhwc_map, 1, spatial="max"), m.amax((2, 3)))
    nhwc = torch.randn(2, 4, 4, 6)  # channel-last maps (e.g. ConvNeXt/Swin LayerNorm)
    torch.testing.assert_close(reduce_output(nhwc, -1), nhwc.mean((1, 2)))


# ---------------------------------------------------------------------------------------------- Swin, ConvNeXt
def _tiny_swin_and_convnext():
    from timm.models.convnext import ConvNeXt
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 2),
                           num_classes=5).eval()  # 8x8 then 4x4 patches, 4 then 1 windows; every 2nd block shifted
    convnext = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=5, conv_mlp=False).eval()  # NHWC MLP
    return {"swin": swin, "convnext": convnext}


def _mean_over_space(model, name: str, output: torch.Tensor) -> torch.Tensor:
    """Brute force for one image: the output as one (H, W, C) map (windows put back in place with timm's own
    ``window_reverse``), or its tokens, averaged over positions -> (C,)."""
    from timm.models.swin_transformer import window_reverse

    module = model.get_submodule(name)
    if output.shape[0] != 1:  # windowed attention: (windows, tokens, C) of a Swin block's (rolled) map
        block = model.get_submodule(name.rsplit(".attn", 1)[0])
        (h, w), (wh, ww) = block.input_resolution, block.window_size
        output = window_reverse(output.reshape(-1, wh, ww, output.shape[-1]), (wh, ww), h, w)
    last = isinstance(module, torch.nn.Linear) or (isinstance(module, torch.nn.LayerNorm)
                                                   and not type(module).__name__.endswith("2d"))
    if output.ndim == 4:
        return output[0].mean((0, 1)) if last else output[0].mean((1, 2))
    return output[0].flatten(0, -2).mean(0) if output.ndim > 2 else output[0]


@pytest.mark.parametrize("arch", ["swin", "convnext"])
def test_windowed_and_channel_last_layers_record_the_mean_over_space(arch, tmp_path):
    from unitlens.zoo.factory import LoadedModel

    from conftest import write_images

    net = _tiny_swin_and_convnext()[arch]
    rng = np.random.default_rng(0)
    write_images(tmp_path / "images", [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)])
    loaded = LoadedModel(arch, net, lambda img: to_int_tensor(img) / 255, "random", (3, 32, 32))
    infos = enumerate_units(net)
    if arch == "swin":
        assert {"layers.0.blocks.0.attn.qkv", "layers.0.blocks.1.attn.proj", "layers.1.blocks.0.norm1"} <= \
            {i.name for i in infos}
    else:
        assert {"stages.0.blocks.0.norm", "stages.1.blocks.0.mlp.fc1"} <= {i.name for i in infos}
    atlas = record(loaded, str(tmp_path / "images"), tmp_path / "atlas", infos, k=2, batch_size=2, num_workers=0,
                   progress=False).atlas
    data = load_dataset(str(tmp_path / "images"), loaded.transform)
    per_image = {i.name: [] for i in infos}
    hooks = [net.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: per_image[n].append(_mean_over_space(net, n, o))) for n in per_image]
    with torch.no_grad():
        for s in range(len(data)):
            net(data[s][0][None])
    for h in hooks:
        h.remove()
    units = atlas.units()
    for info in infos:
        expected = torch.stack(per_image[info.name]).double()  # (images, C)
        rows = units[units["layer"] == info.name].sort_values("unit")
        assert len(rows) == info.width == expected.shape[1], info.name
        np.testing.assert_allclose(rows["mean"].to_numpy(), expected.mean(0).numpy(), atol=1e-5, err_msg=info.name)
        top = atlas.exemplars(info.name).top_vals[:, 0].double()
        np.testing.assert_allclose(top.numpy(), expected.amax(0).numpy(), atol=1e-5, err_msg=info.name)


def test_an_output_that_is_not_one_row_per_image_names_its_layer(tmp_path, random_images):
    from torch import nn

    from unitlens.errors import BadInput
    from unitlens.zoo.factory import LoadedModel

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x).mean((2, 3))
            return self.fc(torch.cat([h, h[:1]]))  # one row more than the batch

    loaded = LoadedModel("odd", Odd().eval(), to_int_tensor, "hand-built", (3, 8, 8))
    with pytest.raises(BadInput, match=r"1 layer\(s\) cannot be recorded \(fc: output \(3, 2\): .*3 rows for a "
                                       r"batch of 2 images.*--exclude 'fc'"):
        record(loaded, str(random_images), tmp_path / "a", ["conv", "fc"], batch_size=4, num_workers=0,
               progress=False)
    swin = LoadedModel("swin", _tiny_swin_and_convnext()["swin"], lambda img: to_int_tensor(img.resize((32, 32))),
                       "random", (3, 32, 32))
    with pytest.raises(BadInput, match=r"layers.0.blocks.0.attn.qkv: .*no class token.*--tokens mean"):
        record(swin, str(random_images), tmp_path / "b", ["layers.0.blocks.0.attn.qkv"], tokens="cls", batch_size=4,
               num_workers=0, progress=False)


def test_windows_unfold_per_image_and_channel_dims_follow_the_declared_width():
    from unitlens.recording.reduce import unfold_windows
    from unitlens.zoo.units import channel_dim_of

    maps = torch.randn(3, 6, 4, 4)  # 3 images, 6 channels, 4x4: as 4 windows of 2x2 each, image-major
    windows = maps.reshape(3, 6, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(12, 6, 2, 2)
    torch.testing.assert_close(reduce_output(windows, 1, batch=3), maps.mean((2, 3)))
    torch.testing.assert_close(reduce_output(windows, 1, spatial="max", batch=3), maps.amax((2, 3)))
    tokens = windows.flatten(2).transpose(1, 2)  # (12, 4, 6) channel-last window tokens
    torch.testing.assert_close(reduce_output(tokens, -1, batch=3), maps.mean((2, 3)))
    assert unfold_windows(tokens, -1, 3).shape == (3, 16, 6)
    # a norm declared channel-last whose width sits in dim 1 (and the other way round); ambiguity keeps the rule
    assert channel_dim_of(torch.zeros(2, 6, 4, 4), -1, 6) == 1
    assert channel_dim_of(torch.zeros(2, 4, 4, 6), 1, 6) == -1
    assert channel_dim_of(torch.zeros(2, 6, 4, 6), 1, 6) == 1
    # a user-named module (0: unknown) of a Swin block: (B, H, W, C) with square H, W
    assert channel_dim_of(torch.zeros(2, 8, 8, 16), 0) == -1 and channel_dim_of(torch.zeros(2, 16, 8, 8), 0) == 1


def test_a_plain_module_records_as_its_loaded_model_and_says_what_needs_it_again(exact_model, random_images,
                                                                                  tmp_path):
    """``record`` takes an ``nn.Module`` with its transform: the atlas equals the one of the same module wrapped by
    hand, it records the weights hash, and loading the model back names what to pass instead."""
    kw = dict(k=6, progress=False, num_workers=0)
    wrapped = record(exact_model, str(random_images), tmp_path / "wrapped", ["conv"], **kw).atlas
    plain = record(exact_model.model, str(random_images), tmp_path / "plain", ["conv"], transform=to_int_tensor,
                   **kw).atlas
    a, b = wrapped.exemplars("conv"), plain.exemplars("conv")
    assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.bottom_vals, b.bottom_vals)
    cfg = plain.manifest.config
    assert cfg.model == "ExactNet" and cfg.weights == "in-memory"
    assert cfg.weights_hash == exact_model.weights_hash()
    with pytest.raises(AtlasError, match=r"handed over in Python.*model=as_loaded_model\(module, transform\)"):
        plain.load_model()
    with pytest.raises(BadInput, match="needs its preprocessing: pass transform="):
        record(exact_model.model, str(random_images), tmp_path / "x", ["conv"], **kw)
    with pytest.raises(BadInput, match="not an object of type int"):
        record(3, str(random_images), tmp_path / "x", ["conv"], **kw)
