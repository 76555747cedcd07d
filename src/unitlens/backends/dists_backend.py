"""``dists``: the DISTS perceptual distance (Ding et al., 2022), as a pairwise backend.

DISTS compares two images by the statistics of their VGG16 feature maps f_k (k = 0: the image itself, then
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3, with max pooling replaced by L2 pooling). Per map k and channel c,
with spatial means μ, variances σ² and covariance σ_xy::

    S1 = (2 μ_x μ_y + c1) / (μ_x² + μ_y² + c1)        (texture)
    S2 = (2 σ_xy + c2) / (σ_x² + σ_y² + c2)            (structure)
    D(x, y) = 1 − Σ_k Σ_c (α_kc S1 + β_kc S2),   α, β ≥ 0 normalised to sum to 1,   c1 = c2 = 1e-6

Only σ_xy couples the two images, and it is a dot product of centred feature maps, so each image goes through
the network once (``features``) and every pair costs one batched matmul per map (``compare``); ``similarity``
returns the (A, B) matrix of −D. D is symmetric.

Weights: the VGG16 backbone is torchvision's ImageNet model (``vgg16-397923af.pth``, downloaded by torchvision into
``$TORCH_HOME/hub/checkpoints``); α and β are the learned weights that ship inside the ``dists-pytorch`` PyPI
package (``DISTS_pytorch/weights.pt``). Images are resized (shorter side) and centre-cropped to ``size`` pixels
(default 224), so that any two can be compared; DISTS's own reference code compares images of up to 256 px.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from unitlens.backends.base import BACKENDS, PairwiseBackend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BadInput
from unitlens.runtime import seeded, torch_threads
from unitlens.zoo.hub import offline, torch_checkpoints

CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
STAGES = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))  # vgg16.features slices; the max pools between are replaced
C1 = C2 = 1e-6
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def alpha_beta_file() -> Path:
    """Where the ``dists-pytorch`` package keeps DISTS's learned α and β (raises ``ModuleNotFoundError`` without it)."""
    from importlib.resources import files

    return Path(str(files("DISTS_pytorch") / "weights.pt"))


class L2Pool(nn.Module):
    """DISTS's replacement of max pooling: sqrt of a 3×3 Hann-weighted blur of x², stride 2 (per channel)."""

    kernel: torch.Tensor

    def __init__(self, channels: int):
        super().__init__()
        w = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]
        kernel = (w[:, None] * w[None, :]) / (w[:, None] * w[None, :]).sum()
        self.register_buffer("kernel", kernel.float().expand(channels, 1, 3, 3).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x.pow(2), self.kernel, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


def _vgg_features(pretrained: bool, name: str) -> nn.Sequential:
    """torchvision's VGG16 convolutional part: ImageNet weights, or seeded random weights (VGG's own init)."""
    from torchvision import models
    from torchvision.models.vgg import cfgs, make_layers

    weights = models.VGG16_Weights.IMAGENET1K_V1
    features = make_layers(cfgs["D"])  # what vgg16().features is, without the 120M-parameter classifier
    if not pretrained:
        with seeded():
            for m in features.modules():
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        return features
    file = torch_checkpoints() / weights.url.rsplit("/", 1)[-1]
    how = ("run once on a machine with network access (torchvision downloads it) and copy TORCH_HOME/hub/checkpoints "
           "over, or set TORCH_HOME to a folder that has it.")
    if offline() and not file.is_file():
        raise unavailable(name, file, how)
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as err:  # URL errors from torchvision's download, a damaged file
        raise unavailable(name, file, how, err) from err
    features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    return features


def _alpha_beta(pretrained: bool, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """DISTS's (1475,) α and β: the learned ones from dists-pytorch, or seeded random ones as its own init draws."""
    if not pretrained:
        with seeded(1):
            alpha, beta = torch.randn(2, sum(CHANNELS)).mul_(0.01).add_(0.1)
        return alpha, beta
    how = "pip install dists-pytorch (the unitlens[backends] extra installs it); it ships them in DISTS_pytorch/."
    try:
        file = alpha_beta_file()
        weights = torch.load(file, map_location="cpu", weights_only=True)
        return weights["alpha"].reshape(-1).float(), weights["beta"].reshape(-1).float()
    except ModuleNotFoundError as err:
        raise unavailable(name, "the dists-pytorch package (DISTS_pytorch/weights.pt)", how, err) from err
    except Exception as err:  # a missing or damaged weights.pt
        raise unavailable(name, file, how, err) from err


class DistsBackend(PairwiseBackend):
    def __init__(self, device=None, pretrained: bool = True, size: int = 224, chunk: int = 16):
        super().__init__(device)
        from torchvision import transforms

        if size < 32:
            raise BadInput(f"DISTS needs images of at least 32 px (four L2 poolings); got size={size}")
        self.name = display_name("dists", pretrained)
        self.chunk, self.size = chunk, size
        alpha, beta = _alpha_beta(pretrained, self.name)
        features = _vgg_features(pretrained, self.name)
        stages = [features[a:b] for a, b in STAGES]
        pooled = [nn.Sequential(L2Pool(c), s) for c, s in zip(CHANNELS[1:], stages[1:])]
        self.stages = nn.ModuleList([stages[0], *pooled])
        self.stages.eval().requires_grad_(False).to(self.device)
        total = alpha.sum() + beta.sum()
        self.alpha = [a.to(self.device) for a in (alpha / total).split(CHANNELS)]
        self.beta = [b.to(self.device) for b in (beta / total).split(CHANNELS)]
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.transform = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                             transforms.ToTensor()])  # [0, 1]: DISTS normalises inside

    @property
    def settings(self) -> dict:
        return {"size": self.size}

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image.convert("RGB"))

    @torch.inference_mode()
    def maps(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The six (B, C, H, W) feature maps DISTS compares (the first is the image in [0, 1] itself)."""
        x = batch.to(self.device).float()
        out, h = [x], (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    @torch.inference_mode()
    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Per map: means (B, C), variances (B, C) and the centred map (B, C, H·W); about 25 MB per image at 224 px."""
        out = []
        for f in self.maps(batch):
            flat = f.flatten(2)
            mu = flat.mean(2)
            centred = flat - mu[..., None]
            out += [mu, centred.pow(2).mean(2), centred]
        return out

    @torch.inference_mode()
    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """(A, B) matrix of −DISTS. On a CPU single-threaded: its many mid-sized operations ran 2× (224 px) to 12×
        (64 px) faster so on two busy cores, where a multi-threaded operation waits for its slowest thread."""
        with torch_threads(1) if self.device.type == "cpu" else nullcontext():
            return self._compare(fa, fb)

    def _compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(len(fa[0]), len(fb[0]), device=self.device)
        for k, (alpha, beta) in enumerate(zip(self.alpha, self.beta)):
            mu_a, var_a, xa = fa[3 * k:3 * k + 3]
            mu_b, var_b, xb = fb[3 * k:3 * k + 3]
            s1 = (2 * mu_a[:, None] * mu_b[None] + C1) / (mu_a.pow(2)[:, None] + mu_b.pow(2)[None] + C1)  # (A, B, C)
            cov = torch.bmm(xa.transpose(0, 1), xb.permute(1, 2, 0)) / xa.shape[2]  # (C, A, B)
            s2 = (2 * cov + C2) / (var_a.T[:, :, None] + var_b.T[:, None, :] + C2)
            total += s1 @ alpha + torch.einsum("cab,c->ab", s2, beta)
        return (total - 1).float().cpu()


@BACKENDS.register("dists")
def _load(spec: str, device=None, pretrained: bool = True, **kwargs) -> DistsBackend:
    if spec:
        raise BadInput(f"dists takes no spec (got '{spec}'); use --backend dists")
    return DistsBackend(device=device, pretrained=pretrained, **kwargs)
