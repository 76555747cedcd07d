"""``lpips-alex`` (also ``lpips-vgg``, ``lpips-squeeze``): the LPIPS perceptual distance, as a pairwise backend.

LPIPS is a distance between two images, not an embedding: d(x, y) = sum over layers l of the spatial mean
of sum_c w_lc (f_l(x) - f_l(y))^2, with f_l the channel-normalised features. Normalising any per-image
vector would change it, so this backend has no ``encode_images`` and is not cached; ``similarity(a, b)``
returns the exact (A, B) matrix of -LPIPS. Because d is a quadratic form in per-image features, each image
goes through the network once, not once per pair:
d = sum_l mean_hw [ <w, f_a^2> + <w, f_b^2> - 2 <w f_a, f_b> ].

Weights: the linear heads ship inside the ``lpips`` PyPI package; the backbone is torchvision's ImageNet
model, downloaded by torchvision into ``$TORCH_HOME/hub/checkpoints``.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from PIL import Image

from unitlens.backends.base import BACKENDS, PairwiseBackend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BadInput
from unitlens.runtime import seeded
from unitlens.zoo.hub import offline, torch_checkpoints

NETS = ("alex", "vgg", "squeeze")


def _backbone_file(net: str) -> str:
    from torchvision import models

    weights = {"alex": models.AlexNet_Weights, "vgg": models.VGG16_Weights,
               "squeeze": models.SqueezeNet1_1_Weights}[net].IMAGENET1K_V1
    return weights.url.rsplit("/", 1)[-1]


@contextmanager
def _quiet():
    """lpips builds its backbone with torchvision's deprecated ``pretrained=`` argument; hide that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        yield


class LpipsBackend(PairwiseBackend):
    def __init__(self, net: str = "alex", device=None, pretrained: bool = True, size: int = 224, chunk: int = 32):
        super().__init__(device)
        import lpips
        from torchvision import transforms

        if net not in NETS:
            raise BadInput(f"unknown LPIPS network '{net}'; choose one of {', '.join(NETS)}")
        self.name = display_name(f"lpips-{net}", pretrained)
        self.chunk, self.size = chunk, size
        if pretrained:
            file = torch_checkpoints() / _backbone_file(net)
            how = ("run once on a machine with network access (torchvision downloads it) and copy "
                   "TORCH_HOME/hub/checkpoints over, or set TORCH_HOME to a folder that has it.")
            if offline() and not file.is_file():
                raise unavailable(self.name, file, how)
            try:
                with _quiet():
                    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False)
            except Exception as err:  # URL errors from torchvision's download
                raise unavailable(self.name, file, how, err) from err
        else:
            with seeded(), _quiet():
                model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.normalize_tensor = lpips.normalize_tensor
        # images in [-1, 1] as lpips.im2tensor gives them, at one size so that any two can be compared
        self.transform = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image.convert("RGB"))

    @property
    def settings(self) -> dict:
        return {"size": self.size}

    @torch.inference_mode()
    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Per layer the channel-normalised features f_l, (B, C, H, W); about 2 MB per image at 224 px (alex)."""
        x = self.model.scaling_layer(batch.to(self.device))
        return [self.normalize_tensor(f) for f in self.model.net.forward(x)]

    @torch.inference_mode()
    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """(A, B) matrix of -LPIPS from the quadratic form in each image's features."""
        weights = [lin.model[-1].weight.view(1, -1, 1, 1) for lin in self.model.lins]
        d = torch.zeros((), device=self.device)
        for w, f_a, f_b in zip(weights, fa, fb):
            hw = f_a.shape[2] * f_a.shape[3]
            q_a = (w * f_a.pow(2)).sum(1).mean((1, 2))
            q_b = (w * f_b.pow(2)).sum(1).mean((1, 2))
            cross = (w * f_a).flatten(1) @ f_b.flatten(1).T / hw
            d = d + q_a[:, None] + q_b[None, :] - 2 * cross
        return (-d).float().cpu()

    @torch.inference_mode()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS of aligned pairs (a[i], b[i]), via the package's own ``forward``."""
        return self.model(a.to(self.device), b.to(self.device)).float().cpu().reshape(-1)


def _factory(net: str):
    def load(spec: str, device=None, pretrained: bool = True, **kwargs) -> LpipsBackend:
        if spec:
            raise BadInput(f"lpips-{net} takes no spec (got '{spec}'); use lpips-alex, lpips-vgg or lpips-squeeze")
        return LpipsBackend(net, device=device, pretrained=pretrained, **kwargs)

    return load


for _net in NETS:
    BACKENDS.register(f"lpips-{_net}", _factory(_net))
