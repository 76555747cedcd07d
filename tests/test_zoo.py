"""Model zoo: offline weights really load, unit enumeration, checkpoints and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from torch import nn

from unitlens.data import load_dataset
from unitlens.errors import BadInput, CheckpointMismatch
from unitlens.zoo import enumerate_units, load_model
from unitlens.zoo.factory import offline_weights_path

GOLDEN = json.loads((Path(__file__).parent / "golden" / "offline_top1.json").read_text())["top1"]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_offline_weights_give_golden_predictions(name):
    loaded = load_model(name)
    data = load_dataset("demo", loaded.transform)
    by_path = {p.split("demo/", 1)[1]: i for i, p in enumerate(data.samples["path"])}
    ids = [by_path[p] for p in GOLDEN[name]]
    x = torch.stack([data[i][0] for i in ids])
    expected = torch.tensor(list(GOLDEN[name].values()))
    with torch.inference_mode():
        pretrained = loaded.model(x).argmax(-1)
        random = load_model(name, pretrained=False).model(x).argmax(-1)
    assert torch.equal(pretrained, expected)
    assert (random != expected).sum() >= len(expected) - 1


def test_offline_mapping_matches_the_original_architecture():
    """The weights, mapped onto timm, give the same logits as the architecture they were published with."""
    original = pytest.importorskip("efficientnet_lite_pytorch")
    ref = original.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(offline_weights_path("efficientnet_lite0"), map_location="cpu"))
    ref.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = load_model("efficientnet_lite0").model(x)
        theirs = ref(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_enumerate_units_types_depths_and_selection():
    model = load_model("efficientnet_lite0", pretrained=False).model
    every = enumerate_units(model, skip_first_last=False)
    assert every[0].name == "conv_stem" and every[-1].name == "classifier"
    default = enumerate_units(model)
    assert [i.name for i in default] == [i.name for i in every[1:-1]]
    assert default[0].rel_depth == 0.0 and default[-1].rel_depth == 1.0
    assert [i.depth for i in default] == list(range(len(default)))
    for info in default:
        module = dict(model.named_modules())[info.name]
        assert info.width == getattr(module, "out_channels", getattr(module, "num_features", None))
    widest_conv = max(i.width for i in default if i.type == "Conv")
    assert all(abs(i.rel_width - i.width / widest_conv) < 1e-12 for i in default if i.type == "Conv")
    convs = enumerate_units(model, types=["Conv"])
    assert {i.type for i in convs} == {"Conv"}
    pwl = enumerate_units(model, include=["blocks.*.conv_pwl"])
    assert pwl and all(i.name.endswith("conv_pwl") for i in pwl)
    no_bn = enumerate_units(model, exclude=["*bn*"])
    assert all(i.type != "BatchNorm" for i in no_bn)


def test_depth_and_width_do_not_depend_on_the_selection():
    model = load_model("efficientnet_lite0", pretrained=False).model
    full = {i.name: i for i in enumerate_units(model)}
    pair = enumerate_units(model, include=["blocks.5.0.conv_pwl", "blocks.6.0.conv_pwl"])
    convs = {i.name: i for i in enumerate_units(model, types=["Conv"])}
    for info in pair:
        same = full[info.name]
        assert (info.depth, info.rel_depth, info.rel_width) == (same.depth, same.rel_depth, same.rel_width)
        assert convs[info.name].rel_depth == same.rel_depth
    # the independent expectation: index among the MIS-convention layers, width over the model's widest conv
    names = list(full)
    last = pair[-1]
    assert last.depth == names.index("blocks.6.0.conv_pwl") and last.rel_depth == last.depth / (len(names) - 1)
    widest = max(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert last.rel_width == 320 / widest and (last.rel_depth, last.rel_width) == (0.96875, 0.25)
    kept = {i.name: i for i in enumerate_units(model, skip_first_last=False)}
    assert kept["conv_stem"].rel_depth < 0 < 1 < kept["classifier"].rel_depth  # the kept ends sit outside [0, 1]


def test_named_module_of_other_type_and_unknown_names():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 1), nn.Flatten(), nn.LazyLinear(2))
    infos = enumerate_units(model, include=["1"], skip_first_last=False)
    assert [(i.name, i.type, i.width) for i in infos] == [("1", "Other", None)]
    with pytest.raises(ValueError, match="matches no module"):
        enumerate_units(model, include=["blocks.99"])
    with pytest.raises(ValueError, match="unknown layer type"):
        enumerate_units(model, types=["Conv", "Attention"])


def test_token_layers_are_channel_last():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)
    infos = {i.name: i for i in enumerate_units(model, skip_first_last=False)}
    assert infos["blocks.0.mlp.fc1"].channel_dim == -1 and infos["blocks.0.mlp.fc1"].width == 768
    assert infos["blocks.0.norm1"].type == "LayerNorm" and infos["blocks.0.norm1"].channel_dim == -1
    assert infos["patch_embed.proj"].channel_dim == 1


def test_checkpoint_roundtrip_and_first_mismatch(tmp_path):
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    state = source.state_dict()
    good = tmp_path / "good.pth"
    torch.save({"state_dict": state}, good)
    loaded = load_model("timm:resnet18", checkpoint=good)
    assert loaded.weights == str(good)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, state[name])
    bad_state = dict(state)
    bad_state["layer2.0.conv1.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(bad_state, bad)
    with pytest.raises(CheckpointMismatch, match="layer2.0.conv1.weight"):
        load_model("timm:resnet18", checkpoint=bad)
    missing = {k: v for k, v in state.items() if k != "fc.bias"}
    torch.save(missing, bad)
    with pytest.raises(CheckpointMismatch, match="fc.bias.*missing"):
        load_model("timm:resnet18", checkpoint=bad)


def test_sources_and_errors(tmp_path):
    tv = load_model("torchvision:resnet18", pretrained=False)
    assert not tv.model.training and tv.transform is not None
    module_file = tmp_path / "net.pt"
    torch.save(tv.model, module_file)
    again = load_model(str(module_file))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(again.model(x), tv.model(x))
    with pytest.raises(ValueError, match="unknown model source"):
        load_model("hub:thing")
    with pytest.raises(ValueError, match="timm has no architecture"):
        load_model("timm:not_a_model", pretrained=False)
    with pytest.raises(ValueError, match="unknown model 'efficientnet_lite7'.*Nearest names: efficientnet_lite4"):
        load_model("efficientnet_lite7")
    assert load_model("efficientnet_lite0").weights_hash() != load_model("efficientnet_lite0", False).weights_hash()


def test_resolve_class_by_index_name_and_synonym():
    from unitlens.zoo.classes import resolve_class

    loaded = load_model("efficientnet_lite0", pretrained=False)
    assert resolve_class(loaded, 437) == (437, "beacon")  # "beacon, lighthouse, beacon light, pharos"
    assert resolve_class(loaded, "lighthouse") == (437, "lighthouse")
    assert resolve_class(loaded, "School Bus") == (779, "school bus")
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_class(loaded, "crane")  # the bird (134) and the machine (517)
    with pytest.raises(ValueError, match="out of range"):
        resolve_class(loaded, 1000)
    with pytest.raises(ValueError, match="no class named"):
        resolve_class(loaded, "unicorn")


def test_random_init_is_seeded_so_random_atlases_can_be_resumed_and_reloaded(tmp_path):
    a, b = load_model("timm:resnet18", pretrained=False), load_model("timm:resnet18", pretrained=False)
    assert a.weights_hash() == b.weights_hash() and a.seed == 0
    assert load_model("timm:resnet18", pretrained=False, seed=1).weights_hash() != a.weights_hash()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    load_model("timm:resnet18", pretrained=False)
    assert torch.equal(torch.rand(1), before)  # the caller's random stream is left alone
    from unitlens.atlas import Atlas
    from unitlens.recording import record

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (80 * i, 20, 200 - 60 * i)).save(images / f"{i}.png")
    out = record(load_model("timm:resnet18", pretrained=False, seed=7), str(images), tmp_path / "atlas",
                 ["layer4.1.conv2"], k=2, progress=False, num_workers=0)
    assert out.atlas.manifest.config.seed == 7
    assert Atlas(tmp_path / "atlas").load_model().weights_hash() == out.atlas.manifest.config.weights_hash


# ---------------------------------------------------------------------------------------------- saved modules
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit itself is deprecated
def test_torchscript_is_refused_at_load_with_how_to_save(tmp_path):
    from unitlens.errors import BadInput

    net = _Tiny().eval()
    for kind, compiled in (("script", torch.jit.script(net)), ("trace", torch.jit.trace(net, torch.randn(1, 3, 8, 8)))):
        path = tmp_path / f"{kind}.pt"
        compiled.save(str(path))
        with pytest.raises(BadInput, match=r"TorchScript.*no forward hooks.*torch.save\(model, 'model.pt'\).*"
                                           r"state_dict\(\).*--checkpoint"):
            load_model(str(path))


def test_saved_module_whose_class_cannot_be_imported_names_it(tmp_path, monkeypatch):
    import sys

    from unitlens.errors import BadInput

    package = tmp_path / "mine"
    package.mkdir()
    (package / "netdefs_for_test.py").write_text(
        "from torch import nn\n\nclass TinyNet(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 1)\n\n    def forward(self, x):\n        return self.conv(x)\n")
    monkeypatch.syspath_prepend(str(package))
    import netdefs_for_test

    path = tmp_path / "model.pt"
    torch.save(netdefs_for_test.TinyNet(), path)
    monkeypatch.delitem(sys.modules, "netdefs_for_test")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(package)])
    with pytest.raises(BadInput, match=r"netdefs_for_test:TinyNet.*importable.*PYTHONPATH"):
        load_model(str(path))
    monkeypatch.syspath_prepend(str(package))  # importable again: it loads
    assert type(load_model(str(path)).model).__name__ == "TinyNet"

    main = sys.modules["__main__"]  # a class defined in the script that saved the model
    cls = type("ScriptNet", (_Tiny,), {"__module__": "__main__"})
    monkeypatch.setattr(main, "ScriptNet", cls, raising=False)
    torch.save(cls(), tmp_path / "script.pt")
    monkeypatch.delattr(main, "ScriptNet")
    with pytest.raises(BadInput, match=r"__main__:ScriptNet.*defined in the script that saved the model"):
        load_model(str(tmp_path / "script.pt"))


def test_an_existing_path_is_a_saved_module_whatever_its_suffix(tmp_path):
    from unitlens.errors import MissingFile

    net = _Tiny().eval()
    for name in ("model.bin", "model", "weights.pkl"):
        torch.save(net, tmp_path / name)
        loaded = load_model(str(tmp_path / name))
        assert loaded.weights == str(tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), net.state_dict().values()))
    with pytest.raises(MissingFile, match="model file .*nope.bin does not exist"):
        load_model(str(tmp_path / "nope.bin"))
    with pytest.raises(ValueError, match="is a folder"):
        load_model(str(tmp_path))


# ---------------------------------------------------------------------------------------------- fine-tuned heads
def test_num_classes_builds_the_head_of_a_fine_tuned_checkpoint(tmp_path):
    for name, build in (("timm:resnet18", lambda n: timm.create_model("resnet18", num_classes=n)),
                        ("torchvision:resnet18", lambda n: __import__("torchvision").models.resnet18(num_classes=n))):
        state = build(10).state_dict()
        path = tmp_path / "tuned.pth"
        torch.save(state, path)
        with pytest.raises(CheckpointMismatch, match=r"fc.weight.*\(10, 512\).*\(1000, 512\).*--num-classes 10"):
            load_model(name, checkpoint=path)
        loaded = load_model(name, checkpoint=path, num_classes=10)
        assert all(torch.equal(t, state[k]) for k, t in loaded.model.state_dict().items())
        assert loaded.options == {"num_classes": 10} and loaded.checkpoint_fit is None
    with pytest.raises(ValueError, match="1000-class head.*--checkpoint"):
        load_model("efficientnet_lite0", num_classes=10)


def test_non_strict_checkpoint_loads_what_fits_and_reports_the_rest(tmp_path):
    state = timm.create_model("resnet18", num_classes=1000).state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["layer4.1.bn2.num_batches_tracked"]
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    loaded = load_model("timm:resnet18", checkpoint=path, num_classes=10, checkpoint_strict=False)
    fit = loaded.checkpoint_fit
    assert fit.mismatched == [("fc.weight", (1000, 512), (10, 512)), ("fc.bias", (1000,), (10,))]
    assert fit.unexpected == ["extra.weight"] and fit.missing == ["layer4.1.bn2.num_batches_tracked"]
    own = loaded.model.state_dict()
    assert fit.loaded == len(own) - 3
    assert all(torch.equal(own[k], state[k]) for k in own if k not in {"fc.weight", "fc.bias",
                                                                         "layer4.1.bn2.num_batches_tracked"})
    assert own["fc.weight"].shape == (10, 512)
    text = fit.describe()
    assert "fc.weight (1000, 512) != (10, 512)" in text and "extra.weight" in text
    assert loaded.options == {"num_classes": 10, "checkpoint_strict": False}
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointMismatch, match="no tensor of the checkpoint fits"):
        load_model("timm:resnet18", checkpoint=tmp_path / "foreign.pth", checkpoint_strict=False)


def test_architecture_options_in_the_name_and_seeded_random_init():
    from PIL import Image

    from unitlens.zoo.factory import split_options

    assert split_options("timm:resnet10t?num_classes=22&input_size=64") == \
        ("timm:resnet10t", {"num_classes": 22, "input_size": 64})
    assert split_options("efficientnet_lite0") == ("efficientnet_lite0", {})
    with pytest.raises(BadInput, match="model option 'classes=3'.*num_classes"):
        split_options("timm:resnet10t?classes=3")
    with pytest.raises(BadInput, match="1000-class head"):
        load_model("efficientnet_lite0?num_classes=3")
    with pytest.raises(BadInput, match="give it once"):
        load_model("timm:test_resnet?num_classes=5", pretrained=False, num_classes=4)
    state = torch.random.get_rng_state()
    a = load_model("timm:test_resnet?num_classes=5&input_size=40", pretrained=False)
    b = load_model("timm:test_resnet?num_classes=5&input_size=40", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert a.weights_hash() == b.weights_hash()
    x = a.transform(Image.new("RGB", (90, 70), (10, 200, 30)))
    assert tuple(x.shape) == (3, 40, 40) and a.input_size == (3, 40, 40)
    with torch.no_grad():
        assert tuple(a.model(x[None]).shape) == (1, 5)
    tv = load_model("torchvision:resnet18?num_classes=4&input_size=48", pretrained=False)
    assert tuple(tv.transform(Image.new("RGB", (90, 70))).shape) == (3, 48, 48)
    assert tv.model.fc.out_features == 4


# ---------------------------------------------------------------------------------------------- tagged timm names
def test_a_tag_picks_its_weights_data_configuration_and_head():
    """The tag's pretrained_cfg (timm's own record of it) gives the input size, crop, interpolation, mean/std and
    classes; with or without ``timm:``; random init needs no hub."""
    from timm.models import get_pretrained_cfg

    for name in ("resnet50.a1_in1k", "resnet50.tv_in1k", "caformer_s18.sail_in1k_384", "vit_tiny_patch16_224"
                 ".augreg_in21k"):
        cfg = get_pretrained_cfg(name)
        for given in (f"timm:{name}", name):
            loaded = load_model(given, pretrained=False, meta=True)
            assert loaded.name == given and loaded.input_size == cfg.input_size
            resize, crop = loaded.transform.transforms[:2]
            assert resize.size == int(cfg.input_size[-1] / cfg.crop_pct)  # the tag's crop fraction
            assert resize.interpolation.value == cfg.interpolation and crop.size == tuple(cfg.input_size[1:])
            normalize = loaded.transform.transforms[-1]
            assert tuple(normalize.mean.tolist()) == pytest.approx(cfg.mean)
            assert loaded.model.num_classes == cfg.num_classes  # in21k: 21843 classes, in1k: 1000
    random = load_model("timm:resnet18.a1_in1k?input_size=32", pretrained=False)
    assert random.weights == "random" and random.input_size == (3, 32, 32)
    assert random.weights_hash() == load_model("resnet18.a1_in1k?input_size=32", pretrained=False).weights_hash()


def test_unknown_tags_and_names_list_the_nearest_known_ones():
    with pytest.raises(BadInput, match=r"no pretrained tag 'a1_in1kk' for resnet50; nearest: resnet50.a1_in1k, "):
        load_model("timm:resnet50.a1_in1kk", pretrained=False)
    with pytest.raises(BadInput, match=r"no architecture 'pvt'; nearest: pvt_v2_b2_li.in1k"):
        load_model("timm:pvt.v2.b2.li.in1k", pretrained=False)  # the paper's damaged spelling
    with pytest.raises(BadInput, match=r"unknown model 'pvt.v2.b2.li.in1k'.*Nearest names: pvt_v2_b2_li.in1k"):
        load_model("pvt.v2.b2.li.in1k", pretrained=False)


def test_tagged_pretrained_weights_without_a_hub_are_a_clear_error(monkeypatch, tmp_path):
    from unitlens.errors import WeightsUnavailable

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.unitlens-test.invalid")  # never resolves
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    for name in ("timm:resnet18.a1_in1k", "resnet18.a1_in1k"):
        with pytest.raises(WeightsUnavailable, match=r"pretrained weights could not be loaded.*cannot be reached"
                                                     r".*--random"):
            load_model(name)


def test_a_meta_build_lists_the_layers_of_the_real_model_without_memory():
    meta = load_model("timm:convnext_atto.d2_in1k", pretrained=False, meta=True)
    real = load_model("timm:convnext_atto.d2_in1k", pretrained=False)
    assert all(p.is_meta for p in meta.model.parameters())
    assert enumerate_units(meta.model) == enumerate_units(real.model)
    with pytest.raises(BadInput, match="built without weights"):
        meta.weights_hash()


def test_channels_last_only_where_every_weight_allows_it():
    from unitlens.runtime import channels_last_mode, channels_last_ok, prepare_model

    lam = load_model("timm:lambda_resnet26t.c1_in1k", pretrained=False, meta=True).model  # a Conv3d weight
    assert not channels_last_ok(lam)
    with pytest.raises(RuntimeError):  # what the conversion itself does with a 5-D weight
        lam.to(memory_format=torch.channels_last)
    prepare_model(lam, torch.device("meta"))  # left as it is instead
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    prepare_model(net, torch.device("cpu"))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    with channels_last_mode(False):
        prepare_model(plain, torch.device("cpu"))
    assert plain[0].weight.is_contiguous() and not plain[0].weight.is_contiguous(memory_format=torch.channels_last)
