"""``hf:<model id or local folder>``: Hugging Face transformers models.

Vision-language models (CLIP, SigLIP, ...: any model with ``get_image_features``/``get_text_features``) give
image and text embeddings in their shared space. Image-only models (DINOv2, ViT, ...) give their pooled
output (DINOv2: the layer-normed CLS token), or the CLS token where there is no pooler. Preprocessing is
the model's own ``AutoImageProcessor``; texts go through its ``AutoTokenizer``.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from unitlens.backends.base import BACKENDS, Backend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BadInput
from unitlens.runtime import seeded
from unitlens.zoo.hub import hf_hub_cache, hub_mode, hub_offline


def _features(out) -> torch.Tensor:
    """``get_*_features`` return a tensor (transformers 4) or an output whose ``pooler_output`` is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFBackend(Backend):
    def __init__(self, model_id: str, device=None, pretrained: bool = True, cache_dir=None):
        super().__init__(device)
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModel,
            AutoTokenizer,
        )

        if not model_id:
            raise BadInput("the hf backend needs a model id, e.g. hf:facebook/dinov2-base or "
                             "hf:openai/clip-vit-base-patch32 (or a local folder saved with save_pretrained)")
        self.name = display_name(f"hf:{model_id}", pretrained)
        cache = str(cache_dir or hf_hub_cache())
        kw: dict[str, Any] = {"cache_dir": cache, "local_files_only": hub_offline()}
        how = ("run once on a machine with network access to fill that cache (copy HF_HOME over), point "
               "HF_HOME/HF_HUB_CACHE at a cache that has it, or give a local folder: hf:/path/to/model.")
        where = f"{cache} (Hugging Face repo {model_id})"
        with hub_mode():
            try:
                config = AutoConfig.from_pretrained(model_id, **kw)
                self.processor = AutoImageProcessor.from_pretrained(model_id, **kw)
                if pretrained:
                    model = AutoModel.from_pretrained(model_id, **kw)
            except OSError as err:  # missing files (hub, cache or folder) surface as OSError
                raise unavailable(self.name, where, how, err, hub=True) from err
            if not pretrained:
                with seeded():
                    model = AutoModel.from_config(config)
            self.has_text = hasattr(model, "get_text_features")
            self.tokenizer: Any = None
            if self.has_text:
                try:
                    self.tokenizer = AutoTokenizer.from_pretrained(model_id, **kw)
                except OSError as err:
                    raise unavailable(self.name, where, how, err, hub=True) from err
        self.config = config
        self.model = model.eval().to(self.device)
        self._dim: int | None = None

    @property
    def dim(self) -> int:  # type: ignore[override]  # read off the model: configs name the width differently
        """Read off one forward pass of a blank image (configs name the output width differently)."""
        if self._dim is None:
            blank = Image.new("RGB", (224, 224), (127, 127, 127))
            self._dim = int(self.encode_images(self.preprocess(blank)[None]).shape[1])
        return self._dim

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        if hasattr(self.model, "get_image_features"):
            return self._finish(_features(self.model.get_image_features(pixel_values=batch)))
        out = self.model(pixel_values=batch)
        pooled = getattr(out, "pooler_output", None)
        return self._finish(pooled if pooled is not None else out.last_hidden_state[:, 0])

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if not self.has_text:
            return super().encode_text(texts)
        if self.config.model_type.startswith("siglip"):  # SigLIP was trained on max-length padded text
            max_length = getattr(self.config.text_config, "max_position_embeddings", 64)
            tokens = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                                    return_tensors="pt")
        else:
            tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        # pass what the model's own tokenizer returns (SigLIP's gives input_ids only)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return self._finish(_features(self.model.get_text_features(**tokens)))


@BACKENDS.register("hf")
def _load_hf(spec: str, device=None, pretrained: bool = True, cache_dir=None) -> HFBackend:
    return HFBackend(spec, device=device, pretrained=pretrained, cache_dir=cache_dir)
