"""The record pass against brute force on hand-built units; batch-size invariance; resume; bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from unitlens.atlas import Atlas
from unitlens.data import load_dataset
from unitlens.errors import AtlasError
from unitlens.record import LayerState, record
from unitlens.record.reduce import reduce_output
from unitlens.record.state import decode, encode
from unitlens.zoo import enumerate_units

from conftest import to_int_tensor


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


def expected_order(values: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """Sample ids sorted by value (descending if largest), ties by lower id, first k: per unit (C, k)."""
    ids = np.arange(values.shape[0])
    return np.stack([np.array(sorted(ids, key=lambda i: (-v[i] if largest else v[i], i))[:k])
                     for v in values.T])


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


def test_ties_go_to_the_lower_sample_id(exact_model, random_images, tmp_path):
    """The fixture holds two triples of identical images: wherever they tie, lower ids come first."""
    result = record(exact_model, str(random_images), tmp_path / "a", k=60, batch_size=16, progress=False,
                    num_workers=0, layers=enumerate_units(exact_model.model, skip_first_last=False))
    data = result.atlas.dataset()
    by_content: dict[bytes, list[int]] = {}
    for i in range(len(data)):
        by_content.setdefault(np.asarray(data.image(i)).tobytes(), []).append(i)
    groups = [ids for ids in by_content.values() if len(ids) > 1]
    assert sorted(map(len, groups)) == [3, 3]
    ex = result.atlas.exemplars("conv")
    for row in ex.top_ids.tolist() + ex.bottom_ids.tolist():
        for group in groups:
            assert [i for i in row if i in group] == group


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
    assert first.atlas.manifest["config"]["weights_hash"] == forced.atlas.manifest["config"]["weights_hash"]


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


def test_keys_decode_to_values_and_ids_in_total_order():
    values = torch.tensor([0.0, -0.0, 1.5, -1.5, float("inf"), float("-inf"), 1e-38, -3e38, 2.5, 2.5])
    ids = torch.tensor([4, 9, 0, 1, 2, 3, 5, 6, 8, 7])
    keys = encode(values, ids)
    decoded_values, decoded_ids = decode(keys)
    assert torch.equal(decoded_ids, ids) and torch.equal(decoded_values, values + 0.0)
    order = keys.argsort(descending=True).tolist()
    expected = sorted(range(10), key=lambda i: (-values[i].item(), ids[i].item()))
    assert order == expected


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
