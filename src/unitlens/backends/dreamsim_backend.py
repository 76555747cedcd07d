"""``dreamsim[:<type>]``: DreamSim perceptual embeddings (the MIS paper's default observer).

``dreamsim`` is the paper's ensemble (DINO ViT-B/16 + CLIP ViT-B/16 + OpenCLIP ViT-B/16, 1792-d); the
single-model variants ``dino_vitb16``, ``clip_vitb32``, ``open_clip_vitb32``, ``dinov2_vitb14`` and
``synclr_vitb16`` are DreamSim's own alternatives. Embeddings are DreamSim's ``embed`` with
``normalize_embeds=True``, so the dot product of two of them is exactly 1 - DreamSim distance.

Pretrained weights are loaded by ``dreamsim.dreamsim`` itself: checkpoints (GitHub release zip) and the
DINO/DINOv2 code and weights (torch.hub) all live in one cache folder, ``cache_dir=`` or
``$DREAMSIM_CACHE`` or ``$TORCH_HOME/dreamsim``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from PIL import Image

from unitlens.backends.base import BACKENDS, Backend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BackendUnavailable, BadInput
from unitlens.runtime import seeded
from unitlens.zoo.hub import offline, torch_home

# Files ``dreamsim.model.download_weights`` checks for before it downloads (it keeps this list private).
REQUIRED = {
    "ensemble": ["dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar", "clip_vitb16_pretrain.pth.tar",
                 "ensemble_lora"],
    "dino_vitb16": ["dino_vitb16_pretrain.pth", "dino_vitb16_single_lora"],
    "dinov2_vitb14": ["dinov2_vitb14_pretrain.pth", "dinov2_vitb14_single_lora"],
    "open_clip_vitb32": ["open_clip_vitb32_pretrain.pth.tar", "open_clip_vitb32_single_lora"],
    "clip_vitb32": ["clip_vitb32_pretrain.pth.tar", "clip_vitb32_single_lora"],
    "synclr_vitb16": ["synclr_vit_b_16.pth", "synclr_vitb16_single_lora"],
}
# torch.hub repositories the DINO-based variants import their architecture code from
HUB_REPOS = {"ensemble": "facebookresearch_dino_main", "dino_vitb16": "facebookresearch_dino_main",
             "dinov2_vitb14": "facebookresearch_dinov2_main"}


def dreamsim_cache(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("DREAMSIM_CACHE") or torch_home() / "dreamsim").expanduser()


def _missing(kind: str, cache: Path) -> list[str]:
    needed = REQUIRED[kind] + ([HUB_REPOS[kind]] if kind in HUB_REPOS else [])
    return [f for f in needed if not (cache / f).exists()]


def _random_vit(model_type: str, load_dir: str = ""):
    """Stand-in for ``ViTExtractor.create_model`` that builds each backbone exactly as DreamSim's loaders do
    (``load_clip_as_dino`` etc.: DINO-style ViT-B, LayerNorm as ``pos_drop``, QuickGELU for OpenAI CLIP,
    LayerNorm eps 1e-5) but skips ``load_state_dict``, so no checkpoint file is read."""
    from dreamsim.feature_extraction.load_clip_as_dino import QuickGELU
    from dreamsim.feature_extraction.vision_transformer import DINOHead, vit_base

    if model_type == "dino_vitb16":  # the torch.hub DINO ViT-B/16 is this same DINO VisionTransformer
        return vit_base(patch_size=16), DINOHead(768, 2048)
    if model_type == "synclr_vitb16":
        return vit_base(patch_size=16)
    for prefix in ("open_clip_vitb", "clip_vitb"):
        if model_type.startswith(prefix):
            vit = vit_base(patch_size=int(model_type[len(prefix):]))
            vit.pos_drop = torch.nn.LayerNorm(vit.embed_dim)
            if prefix == "clip_vitb":
                for blk in vit.blocks:
                    blk.mlp.act = QuickGELU()
            for m in vit.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.eps = 1e-5
            proj = torch.randn(vit.embed_dim, 512) * vit.embed_dim ** -0.5
            return vit, proj
    raise BackendUnavailable(
        f"dreamsim: a random-weight '{model_type}' needs its architecture code from torch.hub, which is not "
        "shipped in the dreamsim package; use dreamsim:clip_vitb32, open_clip_vitb32, dino_vitb16, synclr_vitb16 "
        "or the ensemble for random-weight builds"
    )


@contextmanager
def _keep_torch_hub_dir():
    """``dreamsim`` calls ``torch.hub.set_dir(cache)`` globally; put the caller's setting back afterwards."""
    old = torch.hub._hub_dir  # None means "derive from TORCH_HOME", which get_dir() would pin
    try:
        yield
    finally:
        torch.hub._hub_dir = old


class DreamSimBackend(Backend):
    def __init__(self, kind: str = "ensemble", device=None, pretrained: bool = True, cache_dir=None):
        super().__init__(device)
        import dreamsim
        from dreamsim.config import dreamsim_args
        from dreamsim.model import EMBED_DIMS, PerceptualModel
        from torchvision import transforms

        kind = kind or "ensemble"
        if kind not in REQUIRED:
            raise BadInput(f"unknown DreamSim type '{kind}'; choose one of {', '.join(REQUIRED)}")
        self.kind = kind
        self.name = display_name("dreamsim" if kind == "ensemble" else f"dreamsim:{kind}", pretrained)
        cfg = dreamsim_args["model_config"][kind]
        size = dreamsim_args["img_size"]
        if pretrained:
            cache = dreamsim_cache(cache_dir)
            missing = _missing(kind, cache)
            how = (f"run load_backend('{self.name}') once on a machine with network access (it downloads the "
                   f"checkpoint zip from GitHub and the DINO code from torch.hub into that folder) and copy the folder "
                   "over; point cache_dir= or DREAMSIM_CACHE at it.")
            if missing and offline():
                raise unavailable(self.name, f"{cache} (missing {', '.join(missing)})", how)
            try:
                with _keep_torch_hub_dir():
                    cache.mkdir(parents=True, exist_ok=True)
                    model, _ = dreamsim.dreamsim(pretrained=True, device=str(self.device), cache_dir=str(cache),
                                                 normalize_embeds=True, dreamsim_type=kind)
            except Exception as err:  # URL, zip, hub and file errors all mean: weights not here
                raise unavailable(self.name, f"{cache} (missing {', '.join(missing) or 'nothing'})", how, err) from err
        else:
            # The LoRA adapters DreamSim adds start as exact identities (lora_B = 0), so random weights need none.
            with seeded(), mock.patch("dreamsim.feature_extraction.extractor.ViTExtractor.create_model",
                                           staticmethod(_random_vit)):
                model = PerceptualModel(**cfg, device=str(self.device), normalize_embeds=True)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.dim = sum(EMBED_DIMS[m][f.split("_")[0]] for m, f in zip(cfg["model_type"].split(","),
                                                                     cfg["feat_type"].split(",")))
        # dreamsim.dreamsim's preprocessing: bicubic resize to 224 x 224 (no crop), [0, 1]; the model normalises
        self.transform = transforms.Compose([
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
        ])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image.convert("RGB"))

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self._finish(self.model.embed(batch.to(self.device)))

    @torch.inference_mode()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """DreamSim's own distance of aligned pairs (a[i], b[i]), via the package's ``forward``."""
        return self.model(a.to(self.device), b.to(self.device)).float().cpu().reshape(-1)


@BACKENDS.register("dreamsim")
def _load_dreamsim(spec: str, device=None, pretrained: bool = True, cache_dir=None) -> DreamSimBackend:
    return DreamSimBackend(spec, device=device, pretrained=pretrained, cache_dir=cache_dir)
