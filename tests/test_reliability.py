"""Nothing lost, nothing silently wrong (issue 16, items 4, 5, 6, 10, 17): content-keyed fingerprints and embedding
caches, derived results tied to their atlas, corrupt files named (and ``atlas verify``), high-bit-depth images,
bad inputs refused before any work.

Every test here failed on the code before its fix (checked by running it against the previous commit).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import unitlens.atlas.lock
import unitlens.cli.common
from unitlens.atlas import Atlas
from unitlens.atlas.files import write_json, write_parquet, write_tensors
from unitlens.backends import EmbeddingCache
from unitlens.backends.base import Backend
from unitlens.cli import app
from unitlens.data import load_dataset
from unitlens.data.images import open_rgb
from unitlens.errors import AtlasError, BadInput, CorruptFile, WeightsUnavailable
from unitlens.recording import record
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import enumerate_units

from conftest import ExactNet, to_int_tensor

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))


class MeanColour(Backend):
    """Embedding = the image's mean colour, normalised: a changed image gets a different vector."""

    name = "meancolour"
    dim = 3

    def __init__(self):
        super().__init__("cpu")
        self.calls = 0

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += len(batch)
        return self._finish(batch.mean((2, 3)) + 1.0)


def _bmp_folder(root: Path, n: int = 8, seed: int = 0) -> Path:
    """n uncompressed 8x8 BMPs: every file has the same byte size, whatever its pixels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.bmp")
    return root


def _record(model, data, out, **kw):
    layers = enumerate_units(model.model, skip_first_last=False)
    return record(model, str(data), out, layers, k=kw.pop("k", 3), progress=False, num_workers=0, **kw)


@pytest.fixture
def model() -> LoadedModel:
    return LoadedModel(name="exactnet", model=ExactNet().eval(), transform=to_int_tensor, weights="hand-built",
                       input_size=(3, 8, 8))


class OtherNet(nn.Module):
    """Another architecture (other layer names and widths), for foreign results."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 7, 1)
        self.second = nn.Conv2d(7, 4, 1)

    def forward(self, x):
        return self.second(self.first(x)).mean((2, 3))


# ------------------------------------------------------------------------------------------ 4: stale embeddings
def test_same_size_replacement_is_seen_and_embedded_again(model, tmp_path):
    images = _bmp_folder(tmp_path / "images")
    atlas = _record(model, images, tmp_path / "atlas").atlas
    backend = MeanColour()
    before = EmbeddingCache(atlas, backend).get(range(8), progress=False)
    target = images / "img_02.bmp"
    size = target.stat().st_size
    Image.fromarray(np.full((8, 8, 3), (250, 5, 5), np.uint8)).save(target)  # same size, other bytes
    assert target.stat().st_size == size
    old_fp = atlas.manifest.config.dataset_fingerprint
    atlas = _record(model, images, tmp_path / "atlas", force=True).atlas
    assert atlas.manifest.config.dataset_fingerprint != old_fp
    cache = EmbeddingCache(atlas, backend)
    after = cache.get(range(8), progress=False)
    assert cache.misses == 1 and cache.hits == 7  # only the replaced image; the others are reused by content
    expected = MeanColour().encode_images(MeanColour().preprocess(Image.open(target).convert("RGB"))[None])[0]
    assert torch.allclose(after[2], expected) and not torch.allclose(after[2], before[2])
    assert torch.equal(after[[0, 1, 3, 4, 5, 6, 7]], before[[0, 1, 3, 4, 5, 6, 7]])


def test_identical_images_share_one_embedding_and_an_edited_image_is_refused(model, tmp_path):
    images = _bmp_folder(tmp_path / "images", n=6)
    shutil.copy(images / "img_01.bmp", images / "img_05.bmp")
    atlas = _record(model, images, tmp_path / "atlas").atlas
    backend = MeanColour()
    cache = EmbeddingCache(atlas, backend)
    out = cache.get([1, 5], progress=False)
    assert backend.calls == 1 and torch.equal(out[0], out[1])
    # an image edited after recording: its bytes no longer match the recorded hash, so it is not cached as that
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "img_03.bmp")
    with pytest.raises(AtlasError, match="img_03.bmp.*changed since"):
        EmbeddingCache(atlas, backend).get([3], progress=False)


def test_hashes_are_reused_only_for_unchanged_files(tmp_path):
    images = _bmp_folder(tmp_path / "images", n=5)
    data = load_dataset(images)
    assert data.hash_contents() == 5
    again = load_dataset(images)
    assert again.hash_contents(known=data.samples) == 0 and again.fingerprint() == data.fingerprint()
    # replaced by other bytes of the same size, with the old modification time put back (as cp -p / touch -r do)
    target = images / "img_03.bmp"
    st = target.stat()
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    third = load_dataset(images)
    assert third.hash_contents(known=data.samples) == 1  # the status-change time moved: hashed again
    assert third.content_keys()[3] != data.content_keys()[3] and third.fingerprint() != data.fingerprint()


def test_no_content_hash_reads_no_file_and_old_atlases_stay_readable(model, tmp_path, monkeypatch):
    images = _bmp_folder(tmp_path / "images", n=6)
    first = _record(model, images, tmp_path / "plain", content_hash=False)
    samples = first.atlas.samples()
    assert "content_hash" not in samples and first.atlas.manifest.config.content_hash is False
    assert _record(model, images, tmp_path / "plain").already_complete  # default: as the atlas was recorded
    # an atlas written before content hashes: no column, no config key, a cache keyed by sample id (format 1)
    hashed = _record(model, images, tmp_path / "old").atlas
    manifest = json.loads((hashed.path / "manifest.json").read_text())
    del manifest["config"]["content_hash"]
    manifest["config"]["dataset_fingerprint"] = manifest["dataset"]["fingerprint"] = \
        first.atlas.manifest.config.dataset_fingerprint
    write_json(hashed.path / "manifest.json", manifest)
    write_parquet(hashed.path / "samples.parquet", samples)
    folder = hashed.backend_path("embeddings", "meancolour")
    vectors = torch.arange(12, dtype=torch.float32).view(4, 3)
    write_tensors(folder / "shard-000000-old.safetensors", {
        "embeddings": vectors, "ids": torch.arange(4), "boxes": torch.zeros(4, 4, dtype=torch.int64),
        "has_box": torch.zeros(4, dtype=torch.bool)})
    write_parquet(folder / "index.parquet", pd.DataFrame({
        "id": pd.Series(range(4), dtype="int64"),
        **{c: pd.Series([None] * 4, dtype="Int64") for c in ("x0", "y0", "x1", "y1")},
        "shard": "shard-000000-old.safetensors", "row": pd.Series(range(4), dtype="int32")}))
    write_json(folder / "meta.json", {"backend": "meancolour", "dim": 3, "weights": "", "format": 1})
    old = Atlas(hashed.path)
    assert len(old.dataset()) == 6 and old.dataset().fingerprint() == manifest["config"]["dataset_fingerprint"]
    backend = MeanColour()
    cache = EmbeddingCache(old, backend)
    assert torch.equal(cache.get([2, 0], progress=False), vectors[[2, 0]]) and backend.calls == 0  # migrated
    monkeypatch.setattr("unitlens.data.datasets.file_hashes", lambda *a, **k: pytest.fail("hashed files"))
    assert _record(model, images, hashed.path).already_complete  # re-running its record is still a no-op


# ------------------------------------------------------------------------------------------ 5: foreign results
@pytest.fixture
def two_atlases(model, tmp_path):
    images = _bmp_folder(tmp_path / "images", n=8)
    a = _record(model, images, tmp_path / "a").atlas
    other = LoadedModel(name="othernet", model=OtherNet().eval(), transform=to_int_tensor, weights="hand-built")
    b = _record(other, images, tmp_path / "b").atlas
    return a, b


def _scores(atlas: Atlas, value: float) -> pd.DataFrame:
    units = atlas.units()
    return pd.DataFrame({"layer": units["layer"], "unit": units["unit"], "metric": "mis", "backend": "x",
                         "value": value, "params": "{}"})


def test_a_foreign_scores_file_is_refused_not_plotted(two_atlases):
    a, b = two_atlases
    a.put_scores(_scores(a, 0.7))
    assert len(a.scores()) == len(a.units())
    shutil.copy(a.derived_path("scores"), b.derived_path("scores"))
    with pytest.raises(AtlasError, match="does not belong to atlas"):
        b.scores()
    with pytest.raises(AtlasError, match="does not belong to atlas"):
        b.put_scores(_scores(b, 0.5))  # never merged into
    from unitlens.mis.scoring import load_scores

    with pytest.raises(AtlasError, match="scores.parquet"):
        load_scores(b)
    out = runner.invoke(app, ["plot", "mis", str(b.path), "--out", str(b.path.parent / "plots")])
    assert out.exit_code == 2 and "does not belong" in out.output and "mean nan" not in out.output
    # a file written before stamps existed is judged by its layers and units
    write_parquet(b.derived_path("scores"), _scores(a, 0.7))
    with pytest.raises(AtlasError, match="layer"):
        b.scores()


def test_lens_relevance_and_audit_results_are_tied_to_their_atlas(two_atlases):
    from unitlens.audit.alignment import stored_audit
    from unitlens.lens.store import LayerLens, LensStore
    from unitlens.relevance.store import load_relevance, write_result

    a, b = two_atlases
    store = LensStore(a, "meancolour", dim=3, create=True)
    U = a.layer("conv").width
    store.write_layer(LayerLens("conv", torch.ones(U, 3), torch.zeros(U, 1, dtype=torch.int64), torch.zeros(U, 1),
                                torch.ones(U, 1, dtype=torch.bool), torch.zeros(U, 1, 4, dtype=torch.int64),
                                torch.zeros(U, 1, dtype=torch.bool), torch.zeros(U, 1, dtype=torch.int64),
                                torch.ones(1, 3), torch.zeros(U, dtype=torch.bool)), {"units": U, "m": 1})
    assert LensStore(a, "meancolour").layers == ["conv"]
    shutil.copytree(a.derived_path("lens"), b.derived_path("lens"))
    with pytest.raises(AtlasError, match="lens store .* does not belong"):
        LensStore(b, "meancolour")
    frame = pd.DataFrame({"layer": ["conv"], "unit": [0], "class_index": [1], "class_name": ["x"], "rel_mean": [0.1],
                          "rel_max": [0.2], "rel_raw_mean": [0.1], "n_samples": [3], "top_ids": [[0]]})
    write_result(a, "class_1", frame, {"class_name": "x"})
    assert len(load_relevance(a, 1)) == 1
    shutil.copytree(a.derived_path("relevance"), b.derived_path("relevance"))
    with pytest.raises(AtlasError, match="relevance result .* does not belong"):
        load_relevance(b, 1)
    audit = b.derived_path("audit", "class1-x")
    write_parquet(audit.with_suffix(".parquet"), frame)
    write_json(audit.with_suffix(".json"), {"atlas": a.identity()})
    with pytest.raises(AtlasError, match="audit .* does not belong"):
        stored_audit(b, 1)
    write_json(audit.with_suffix(".json"), {"atlas": b.identity()})
    assert len(stored_audit(b, 1)) == 1


# ------------------------------------------------------------------------------------------ 6: corrupt files
def test_damaged_core_files_name_the_file_and_the_fix(model, tmp_path):
    atlas = _record(model, _bmp_folder(tmp_path / "images"), tmp_path / "atlas").atlas
    ex = atlas.exemplar_file("conv")
    ex.write_bytes(ex.read_bytes()[:50])
    with pytest.raises(CorruptFile, match=rf"{ex}.*--force"):
        atlas.exemplars("conv")
    (atlas.path / "units.parquet").unlink()
    with pytest.raises(CorruptFile, match="units.parquet.*does not exist"):
        atlas.units()
    manifest = atlas.path / "manifest.json"
    good = manifest.read_text()
    manifest.write_text(good[: len(good) // 2])
    out = runner.invoke(app, ["atlas", "info", str(atlas.path)])
    assert out.exit_code == 2 and "manifest.json" in out.output and "Traceback" not in out.output
    manifest.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "layers"}))
    with pytest.raises(CorruptFile, match="manifest.json has no layers"):
        Atlas(atlas.path)
    # --force records over a damaged atlas
    assert _record(model, tmp_path / "images", atlas.path, force=True).atlas.exemplars("conv").k == 3
    # a damaged checkpoint of an unfinished run
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "status": "recording"}))
    (atlas.path / "record_state.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CorruptFile, match="record_state.safetensors.*start the run over"):
        _record(model, tmp_path / "images", atlas.path)


def test_a_damaged_embedding_shard_is_dropped_and_embedded_again(model, tmp_path):
    atlas = _record(model, _bmp_folder(tmp_path / "images"), tmp_path / "atlas").atlas
    backend = MeanColour()
    first = EmbeddingCache(atlas, backend, shard_rows=2).get(range(8), batch_size=2, progress=False)
    shards = sorted(atlas.backend_path("embeddings", "meancolour").glob("shard-*.safetensors"))
    assert len(shards) == 4
    shards[1].write_bytes(shards[1].read_bytes()[:30])
    with pytest.warns(UserWarning, match=rf"{shards[1].name}.*made again"):
        cache = EmbeddingCache(atlas, backend)
        again = cache.get(range(8), progress=False)
    assert cache.misses == 2 and torch.allclose(again, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reopened = EmbeddingCache(atlas, backend)
        assert torch.allclose(reopened.get(range(8), progress=False), first) and reopened.misses == 0
    (reopened.path / "index.parquet").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="index is damaged"):
        rebuilt = EmbeddingCache(atlas, backend)
    assert len(rebuilt) == 8


def test_verify_reports_every_kind_of_damage(two_atlases):
    a, b = two_atlases
    a.put_scores(_scores(a, 0.5))
    ok = runner.invoke(app, ["atlas", "verify", str(a.path)])
    assert ok.exit_code == 0, ok.output
    assert "every check passed" in ok.output and "exemplars/ (" in ok.output
    from unitlens.atlas.verify import verify_atlas

    shutil.copy(a.derived_path("scores"), b.derived_path("scores"))
    ex = b.exemplar_file("first")
    ex.write_bytes(ex.read_bytes()[:60])
    units = b.units()
    write_parquet(b.path / "units.parquet", units[~((units["layer"] == "second") & (units["unit"] == 3))])
    samples = b.samples()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(samples["path"].iloc[4])
    result = verify_atlas(b.path)
    errors = result.errors.set_index("file")
    assert not result.ok
    assert "exemplars/first.safetensors" in errors.index
    assert "units.parquet" in errors.index and "second: 3 rows" in errors.loc["units.parquet", "detail"]
    assert "scores.parquet" in errors.index and "does not belong" in errors.loc["scores.parquet", "detail"]
    assert any("img_04.bmp" in d for d in errors["detail"])
    assert not any("img_04.bmp" in d for d in verify_atlas(b.path, images=False).errors["detail"])
    out = runner.invoke(app, ["atlas", "verify", str(b.path)])
    assert out.exit_code == 1 and "problem(s)" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["atlas", "verify", str(b.path), "--no-images", "--format", "csv"])
    assert out.exit_code == 1 and "img_04.bmp" not in out.output and "exemplars/first.safetensors" in out.output
    missing = runner.invoke(app, ["atlas", "verify", str(b.path.parent)])
    assert missing.exit_code == 1 and "not an atlas" in missing.output


# ------------------------------------------------------------------------------------------ 10: bit depths
def _grey(img: Image.Image) -> np.ndarray:
    rgb = np.asarray(img)
    assert img.mode == "RGB" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


RAMP16 = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_images_are_scaled_not_clipped(mode, tmp_path):
    path = tmp_path / ("a.png" if mode == "I;16" else "a.tif")
    Image.fromarray(RAMP16 if mode == "I;16" else RAMP16.astype(">u2")).save(path)
    assert Image.open(path).mode == mode
    got = _grey(open_rgb(path))
    np.testing.assert_array_equal(got, np.rint(RAMP16 / 257.0).astype(int))  # 0..65535 -> 0..255
    assert (got == 255).mean() < 0.05


def test_32_bit_integer_and_float_images(tmp_path):
    Image.fromarray(RAMP16.astype(np.int32)).save(tmp_path / "i16.tif")  # 16-bit values held in mode I
    np.testing.assert_array_equal(_grey(open_rgb(tmp_path / "i16.tif")), np.rint(RAMP16 / 257.0).astype(int))
    wide = (np.arange(64).reshape(8, 8) * 100_000 - 1_000_000).astype(np.int32)  # beyond 16 bits: min-max
    Image.fromarray(wide).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    np.testing.assert_array_equal(_grey(open_rgb(tmp_path / "i32.tif")),
                                  np.rint((wide - wide.min()) * 255.0 / (wide.max() - wide.min())).astype(int))
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    for name, arr, expected in (("f01.tif", unit, unit * 255.0), ("f255.tif", unit * 200, unit * 200),
                                ("fwide.tif", unit * 4000 - 1000, unit * 255.0)):
        Image.fromarray(arr).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "F"
        np.testing.assert_array_equal(_grey(open_rgb(tmp_path / name)), np.rint(expected.astype(float)).astype(int))


def test_8_bit_modes_and_transparency(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(_grey(open_rgb(tmp_path / "l.png")), grey)
    alpha = np.where(np.arange(64).reshape(8, 8) % 2 == 0, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_grey(open_rgb(tmp_path / "la.png")), np.where(alpha == 255, grey, 255))
    rgba = np.dstack([np.full((8, 8), 10, np.uint8), np.full((8, 8), 20, np.uint8), np.full((8, 8), 30, np.uint8),
                      np.full((8, 8), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = np.asarray(open_rgb(tmp_path / "rgba.png")).astype(int)
    for channel, value in enumerate((10, 20, 30)):  # half-transparent over white
        assert np.abs(got[..., channel] - (value * 128 + 255 * 127) / 255).max() <= 1
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    got = np.asarray(open_rgb(tmp_path / "p.png"))
    assert tuple(got[0, 0]) == (255, 255, 255) and tuple(got[1, 1]) == (200, 100, 50)


# ------------------------------------------------------------------------------------------ 17: bad inputs
def test_bad_numbers_are_refused_before_anything_is_written(model, tmp_path):
    images = _bmp_folder(tmp_path / "images", n=4)
    for kw, option in (({"batch_size": 0}, "--batch-size"), ({"k": 0}, "--k"), ({"num_workers": -1}, "--workers")):
        args = {"k": 3, **kw}
        with pytest.raises(BadInput, match=option):
            record(model, str(images), tmp_path / "x", enumerate_units(model.model, skip_first_last=False),
                   progress=False, **args)
        assert not (tmp_path / "x").exists()
    out = runner.invoke(app, ["record", "--model", "efficientnet_lite0", "--data", str(images), "--out",
                              str(tmp_path / "y"), "--batch-size", "0"])
    assert out.exit_code == 2 and "batch-size" in out.output and not (tmp_path / "y").exists()


def test_out_that_is_a_file_or_read_only_fails_first_and_dot_dot_leaves_nothing(model, tmp_path, monkeypatch):
    images = _bmp_folder(tmp_path / "images", n=4)
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("unitlens.data.datasets.file_hashes", lambda *a, **k: pytest.fail("hashed before checking"),
                        raising=False)
    with pytest.raises(BadInput, match="is a file"):
        _record(model, images, tmp_path / "file")
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(ro, monkeypatch)
    with pytest.raises(BadInput, match="read-only"):
        _record(model, images, ro / "atlas")
    monkeypatch.undo()
    result = _record(model, images, tmp_path / "missing" / ".." / "atlas")
    assert result.atlas.path == tmp_path / "atlas" and not (tmp_path / "missing").exists()


def _read_only(folder: Path, monkeypatch) -> None:
    """Make ``folder`` read-only for this process: its mode bits, and (root ignores them) os.access as a
    non-root user would answer it."""
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:
        real = os.access

        def access(path, mode, *args, **kwargs):
            inside = Path(path).resolve().is_relative_to(folder.resolve())
            return False if inside and mode & os.W_OK else real(path, mode, *args, **kwargs)

        monkeypatch.setattr(unitlens.atlas.lock.os, "access", access)


def test_mis_on_a_read_only_atlas_fails_before_work_and_runs_with_no_write(model, tmp_path, monkeypatch):
    from unitlens.backends.base import BACKENDS
    from unitlens.mis.scoring import score_mis

    BACKENDS.register("meancolour", lambda spec, device=None, **kw: MeanColour())
    images = _bmp_folder(tmp_path / "images", n=24)
    atlas = _record(model, images, tmp_path / "atlas", k=4).atlas
    _read_only(atlas.path, monkeypatch)
    monkeypatch.setattr("unitlens.mis.scoring.EmbeddingCache", lambda *a: pytest.fail("embedded before the check"))
    with pytest.raises(BadInput, match="--no-write"):
        score_mis(atlas, backend="meancolour", n_tasks=2, k_expl=1, progress=False)
    monkeypatch.setattr("unitlens.mis.scoring.EmbeddingCache", EmbeddingCache)
    with pytest.warns(UserWarning, match="read-only: new embeddings are kept in memory"):
        run = score_mis(atlas, backend="meancolour", n_tasks=2, k_expl=1, progress=False, write=False)
    assert run.counts["scored"] > 0 and not atlas.derived_path("embeddings").exists()
    atlas.path.chmod(0o755)


def test_timm_without_a_reachable_hub_asks_only_the_cache(monkeypatch):
    import huggingface_hub.constants
    import timm

    from unitlens.zoo import load_model

    seen = {}

    def create_model(name, pretrained=False, **kw):
        seen["offline"] = huggingface_hub.constants.HF_HUB_OFFLINE
        raise RuntimeError("no cached weights")

    monkeypatch.setattr(timm, "create_model", create_model)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.unitlens-test.invalid")  # never resolves
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "UNITLENS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WeightsUnavailable, match="cannot be reached from here"):
        load_model("timm:resnet18")
    assert seen["offline"] is True  # huggingface_hub looked in the cache only, no minute of retries
    from unitlens.zoo.hub import hub_reachable

    assert not hub_reachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_reachable()  # behind a proxy the proxy decides


def test_unreadable_images_say_why_once_and_name_the_file(model, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / f"ok_{i}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "bomb.png")
    for i in range(8):
        (root / f"broken_{i}.png").write_bytes(b"not an image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12x12 = 144 px: Pillow warns; 16x16 = 256 > 2x: refuses
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # even so, Pillow's per-image bomb warning stays quiet
        result = _record(model, root, tmp_path / "atlas")
    messages = [str(w.message) for w in caught]
    assert result.n_skipped == 9 and result.n_images == 15
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    bomb = [m for m in messages if m.startswith("skipping") and "bomb.png" in m]
    assert len(bomb) == 1 and "MAX_IMAGE_PIXELS" in bomb[0] and "decompression bomb" in bomb[0]
    broken = [m for m in messages if "broken_" in m]
    assert len(broken) == 5 and "UnidentifiedImageError" in broken[0]  # five named, the rest counted
    assert any("the rest are counted" in m for m in messages) and any("9 unreadable image(s)" in m for m in messages)
