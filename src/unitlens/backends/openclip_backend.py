"""``openclip:<arch>/<pretrained tag>``: OpenCLIP image and text towers, e.g. ``openclip:MobileCLIP-S2/datacompdr``.

Loading is OpenCLIP's own: the tag's checkpoint is resolved with ``open_clip.pretrained.download_pretrained``
(Hugging Face cache first), the model is built with the tag's preprocessing (mean, std, interpolation,
resize mode) and QuickGELU setting, and texts go through the architecture's tokenizer.
"""
from __future__ import annotations

import torch
from PIL import Image

from unitlens.backends.base import BACKENDS, Backend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BadInput
from unitlens.runtime import seeded
from unitlens.zoo.hub import hf_hub_cache, hub_mode

DEFAULT_OPENCLIP = "MobileCLIP-S2/datacompdr"


def _parse(spec: str) -> tuple[str, str]:
    import open_clip

    arch, _, tag = (spec or DEFAULT_OPENCLIP).partition("/")
    if arch not in open_clip.list_models():
        raise BadInput(f"open_clip has no architecture '{arch}' (see open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise BadInput(
            f"openclip:{arch}: give a pretrained tag as openclip:{arch}/<tag>; known tags: {', '.join(tags) or 'none'}"
        )
    return arch, tag


class OpenClipBackend(Backend):
    has_text = True

    def __init__(self, spec: str = DEFAULT_OPENCLIP, device=None, pretrained: bool = True, cache_dir=None):
        super().__init__(device)
        import open_clip
        from open_clip.pretrained import download_pretrained

        arch, tag = _parse(spec)
        self.name = display_name(f"openclip:{arch}/{tag}", pretrained)
        pcfg = open_clip.get_pretrained_cfg(arch, tag)
        cache = str(cache_dir or hf_hub_cache())
        source = f"Hugging Face repo {pcfg['hf_hub']}" if pcfg.get("hf_hub") else pcfg.get("url", "")
        where = f"{cache} ({source})"
        checkpoint = None
        if pretrained:
            try:
                with hub_mode():
                    checkpoint = download_pretrained(pcfg, cache_dir=cache)
            except Exception as err:
                raise unavailable(
                    self.name, where,
                    "run once on a machine with network access to fill that cache (copy HF_HOME over), "
                    "or point HF_HOME/HF_HUB_CACHE (or cache_dir=) at a cache that has them.",
                    err,
                    hub=True,
                ) from err
            if not checkpoint:
                raise unavailable(self.name, where, f"open_clip has no download source for tag '{tag}'.")
        with seeded():
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch,
                pretrained=checkpoint,  # a resolved file path, or None for random weights
                force_quick_gelu=bool(pcfg.get("quick_gelu", False)),
                image_mean=pcfg.get("mean"),
                image_std=pcfg.get("std"),
                image_interpolation=pcfg.get("interpolation"),
                image_resize_mode=pcfg.get("resize_mode"),
                pretrained_text=False,  # no separate text-tower download: the checkpoint holds both towers
                cache_dir=cache,
            )
        try:
            with hub_mode():
                self.tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache)
        except Exception as err:  # HF tokenizers (SigLIP, XLM-R towers) come from the hub
            raise unavailable(self.name, cache, "fill the Hugging Face cache with its tokenizer on a networked "
                              "machine.", err, hub=True) from err
        self.model = model.eval().to(self.device)
        self.transform = preprocess
        self.dim = int(open_clip.get_model_config(arch)["embed_dim"])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self._finish(self.model.encode_image(batch.to(self.device)))

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return self._finish(self.model.encode_text(tokens))


@BACKENDS.register("openclip")
def _load_openclip(spec: str, device=None, pretrained: bool = True, cache_dir=None) -> OpenClipBackend:
    return OpenClipBackend(spec, device=device, pretrained=pretrained, cache_dir=cache_dir)
