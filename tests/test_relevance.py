"""CRP relevance: conservation, batched vs per-unit heatmaps, relevance crops, class / predicted-class statistics,
the no-LRP fallback, attribution graphs. Tiny hand-built nets with closed-form relevances where possible."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T
from crp.attribution import CondAttribution
from crp.concepts import ChannelConcept
from PIL import Image
from timm.models._efficientnet_blocks import InvertedResidual
from torch import nn
from zennit.composites import EpsilonPlusFlat

from unitlens.errors import RelevanceError, RelevanceUnavailable
from unitlens.lens.crops import CropContext, crop_examples
from unitlens.lens.examples import select_examples
from unitlens.relevance import (
    RelevanceOptions,
    class_relevance,
    load_relevance,
    predicted_relevance,
    relevant_classes,
)
from unitlens.relevance.attribute import Attribution, target_relevance, unit_heatmaps
from unitlens.relevance.canonizers import ExactMergeBatchNorm
from unitlens.relevance.composite import composite_for
from unitlens.zoo.factory import LoadedModel

from conftest import to_int_tensor, write_images


def _record(model: LoadedModel, data, out, layers, k=6):
    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    infos = enumerate_units(model.model, include=layers)
    record(model, str(data), out, infos, k=k, batch_size=8, num_workers=0, progress=False)
    return out


# ------------------------------------------------------------------------------------------ conservation
class ResidualNet(nn.Module):
    """conv, BN, ReLU6 (saturating), a timm residual block (skip add), conv, BN, ReLU, avg pool, linear head.

    No conv biases and BN without shift, so no bias absorbs relevance and every cut through the net must carry
    exactly the explained logit."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv_stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU6()
        self.block = InvertedResidual(8, 8, exp_ratio=2.0, act_layer=nn.ReLU6)
        self.conv_head = nn.Conv2d(8, 12, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5, bias=False)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.6)
                if isinstance(m, nn.BatchNorm2d):
                    n = m.num_features
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                    # zero mean and shift: the merged conv biases are zero (a bias would absorb relevance)
            # z⁺ loses relevance that reaches a position with no positive contribution; the projection feeding the
            # skip add (no activation after it) is kept non-negative so that never happens
            self.block.conv_pwl.weight.abs_()

    def forward(self, x):
        h = self.act1(self.bn1(self.conv_stem(x)))
        h = self.block(h)
        h = self.act2(self.bn2(self.conv_head(h)))
        return self.fc(self.pool(h).flatten(1))


CUTS = {"conv_stem": 1, "bn1": 1, "act1": 1, "block": 1, "conv_head": 1, "bn2": 1}


def _layer_sums(net, composite, x, target):
    attribution = Attribution(net)
    logits, rel = target_relevance(attribution, composite, x, target, CUTS)
    explained = logits.gather(1, target[:, None])[:, 0].double()
    return explained, {name: r.sum(1) for name, r in rel.items()}, attribution


def test_layer_relevances_sum_to_the_logit_and_need_the_residual_canonizer():
    net = ResidualNet().eval()
    x = torch.rand(3, 3, 12, 12) * 4
    with torch.no_grad():
        pre = net.bn1(net.conv_stem(x))
        logits = net(x)
    assert (pre > 6).any(), "the test needs saturated ReLU6 units (zero gradient, relevance must pass)"
    target = logits.argmax(1)
    explained, sums, _ = _layer_sums(net, composite_for(net), x, target)
    for name, s in sums.items():
        assert torch.allclose(s, explained, rtol=1e-4), (name, s, explained)
    # the input heatmap (flat rule at the first layer) carries the logit too
    data = x.clone().requires_grad_(True)
    heat = CondAttribution(net)(data, [{"y": [int(t)]} for t in target], composite_for(net)).heatmap
    assert torch.allclose(heat.flatten(1).sum(1).double(), explained, rtol=1e-4)
    # without the residual canonizer the skip add hands the full relevance to both branch and shortcut
    plain = EpsilonPlusFlat(canonizers=[ExactMergeBatchNorm()])
    _, sums_plain, _ = _layer_sums(net, plain, x, target)
    assert torch.allclose(sums_plain["block"], explained, rtol=1e-4)  # above the block nothing changes
    assert ((sums_plain["conv_stem"] / explained - 1).abs() > 0.05).all()


def test_lite0_architecture_conserves_relevance_through_its_blocks():
    """Real tf_efficientnet_lite0 (random init: BN shifts and classifier bias are zero, so nothing absorbs
    relevance): cuts through the net carry the logit up to float error. Trained weights lose relevance to
    positive merged biases (README)."""
    from unitlens.zoo import load_model

    torch.manual_seed(0)  # the random init draws from the global generator: fix it, whatever ran before
    net = load_model("efficientnet_lite0", pretrained=False).model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        target = net(x).argmax(1)
    layers = {"conv_stem": 1, "blocks.1.0": 1, "blocks.1.1": 1, "blocks.3.2": 1, "blocks.6.0.conv_pwl": 1,
              "conv_head": 1}
    logits, rel = target_relevance(Attribution(net), composite_for(net), x, target, layers)
    explained = logits.gather(1, target[:, None])[:, 0].double()
    for name, r in rel.items():
        assert torch.allclose(r.sum(1), explained, rtol=2e-3), (name, r.sum(1), explained)
    # without the residual canonizer each of Lite0's 9 skip adds doubles the relevance below it: 2^9 = 512
    plain = EpsilonPlusFlat(canonizers=[ExactMergeBatchNorm()])
    _, rel = target_relevance(Attribution(net), plain, x, target, {"conv_stem": 1})
    assert torch.allclose(rel["conv_stem"].sum(1) / explained, torch.full_like(explained, 512.0), rtol=1e-2)


# ------------------------------------------------------------------------------------------ batched vs loop
def test_batched_heatmaps_and_class_relevance_equal_per_unit_crp_loops():
    net = ResidualNet(seed=1).eval()
    composite = composite_for(net)
    torch.manual_seed(1)
    x = torch.rand(3, 3, 12, 12) * 3
    layer = "conv_head"
    pairs = [(0, 2), (0, 7), (1, 2), (2, 11), (1, 5)]  # (image, unit)
    xb = x[[i for i, _ in pairs]]
    units = torch.tensor([u for _, u in pairs])
    heat, start = unit_heatmaps(CondAttribution(net), composite, xb, layer, units)
    acts = {}
    handle = net.conv_head.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o.detach()))
    with torch.no_grad(), composite.context(net):  # the canonized net: BN merged into conv_head
        net(x)
    handle.remove()
    attribution = Attribution(net)
    for p, (i, u) in enumerate(pairs):
        pos = int(acts["a"][i, u].flatten().argmax())
        assert float(start[p]) == pytest.approx(float(acts["a"][i, u].flatten()[pos]))
        data = x[i:i + 1].clone().requires_grad_(True)
        ref = attribution(data, [{layer: {u: [pos]}}], composite, mask_map=ChannelConcept.mask_rf,
                          start_layer=layer, exclude_parallel=False).heatmap[0]
        assert torch.allclose(heat[p], ref, atol=1e-6 * float(ref.abs().max()) + 1e-9)
    # class relevance of every unit from one pass == CRP's heatmap conditioned on that unit (a conserving net)
    target = torch.tensor([1, 3, 0])
    _, rel = target_relevance(attribution, composite, x, target, {layer: 1})
    for u in (0, 4, 9):
        data = x.clone().requires_grad_(True)
        cond = [{layer: [u], "y": [int(t)]} for t in target]
        ref = attribution(data, cond, composite).heatmap.flatten(1).sum(1).double()
        assert torch.allclose(rel[layer][:, u], ref, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------------ relevance crops
class PatchNet(nn.Module):
    """conv1: local brightness above 150 (fires on the bright patch only); conv2 unit 0 sums an 11x11 window of
    it, so its strongest neuron sees the whole 8x8 patch; unit 1 is a dark-region detector."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 11, padding=5, bias=False)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.stack([torch.full((3, 3, 3), 1 / 27), torch.full((3, 3, 3), -1 / 27)]))
            self.conv1.bias.copy_(torch.tensor([-150.0, 100.0]))
            w = torch.zeros(2, 2, 11, 11)
            w[0, 0] = 1.0
            w[1, 1] = 1.0
            self.conv2.weight.copy_(w)
            self.head.weight.copy_(torch.eye(2))

    def forward(self, x):
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.head(h.mean((2, 3)))


def test_relevance_crop_box_contains_the_planted_patch(tmp_path):
    rng = np.random.default_rng(3)
    arrays, patches = [], []
    for _ in range(10):
        img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        x0, y0 = int(rng.integers(14, 23)), int(rng.integers(2, 11))
        img[y0:y0 + 8, x0:x0 + 8] = 255
        arrays.append(img)
        patches.append((x0, y0, x0 + 8, y0 + 8))
    write_images(tmp_path / "data", arrays)
    model = LoadedModel(name="patchnet", model=PatchNet().eval(), transform=to_int_tensor, weights="hand-built",
                        input_size=(3, 32, 32))
    atlas = _record(model, tmp_path / "data", tmp_path / "atlas", ["conv2"], k=6)
    from unitlens.atlas import Atlas

    context = CropContext(Atlas(atlas), model=model, device="cpu", batch_size=4, progress=False)
    ex = crop_examples(context, {"conv2": select_examples(context.atlas, "conv2", 6)}, "relevance")["conv2"]
    assert ex.crop == "relevance"
    assert bool(ex.has_box[0].all())
    for j in range(6):
        x0, y0, x1, y1 = ex.boxes[0, j].tolist()
        px0, py0, px1, py1 = patches[int(ex.ids[0, j])]
        assert x0 <= px0 and y0 <= py0 and x1 >= px1 and y1 >= py1, (ex.boxes[0, j], patches[int(ex.ids[0, j])])
        assert x0 >= 6 or y1 <= 26  # the far (bottom-left 6x6) corner stays out
        assert (x1 - x0) * (y1 - y0) < 0.5 * 32 * 32  # a crop, not the whole image


# ------------------------------------------------------------------------------------------ class statistics
HEAD = torch.tensor([[1.0, 0.2, -0.5], [0.3, 1.0, 0.1], [-0.4, 0.6, 1.0], [0.8, -0.7, 0.5], [0.1, 0.1, 0.1],
                     [-0.6, 0.9, -0.2], [0.5, 0.5, -1.0], [-10.0, -10.0, -10.0]])


class ShareNet(nn.Module):
    """Units = the R, G, B channels (identity 1x1 conv); logits = HEAD @ channel means. With ε for the head and
    Norm for the pooling, unit j's relevance for class c is mean_j * HEAD[c, j] (closed form)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(3, 8, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.head.weight.copy_(HEAD)

    def forward(self, x):
        return self.head(self.pool(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def share_atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    rng = np.random.default_rng(5)
    arrays = [np.clip(rng.integers(0, 256, 3)[None, None] + rng.normal(0, 10, (8, 8, 3)), 0, 255).astype(np.uint8)
              for _ in range(14)]
    write_images(root / "data", arrays)
    model = LoadedModel(name="sharenet", model=ShareNet().eval(), transform=lambda im: to_int_tensor(im) / 255,
                        weights="hand-built", input_size=(3, 8, 8),
                        extra={"class_names": [f"class {i}, c{i}" for i in range(8)]})
    atlas = _record(model, root / "data", root / "atlas", ["conv"], k=4)
    means = np.stack([a.astype(np.float64).mean((0, 1)) / 255 for a in arrays])  # (N, 3) unit values
    return atlas, model, means


def _expected_shares(means, c):
    rel = means * HEAD[c].double().numpy()[None, :]
    return rel, rel / np.abs(rel).sum(1, keepdims=True)


def test_class_relevance_shares_top5_samples_and_store(share_atlas):
    atlas, model, means = share_atlas
    logits = means @ HEAD.double().numpy().T
    top5 = np.argsort(-logits, 1)[:, :5]
    c = 3
    frame = class_relevance(atlas, "c3", model=model, device="cpu", progress=False, top_n=3, batch_size=5)
    chosen = [i for i in range(len(means)) if c in top5[i]]
    assert 0 < len(chosen) < len(means)
    rel, share = _expected_shares(means[chosen], c)
    assert frame["class_index"].eq(c).all() and frame["class_name"].eq("class 3").all()
    assert frame["n_samples"].eq(len(chosen)).all()
    np.testing.assert_allclose(frame["rel_mean"], share.mean(0), rtol=1e-5)
    np.testing.assert_allclose(frame["rel_max"], share.max(0), rtol=1e-5)
    np.testing.assert_allclose(frame["rel_raw_mean"], rel.mean(0), rtol=1e-4)
    for j in range(3):
        want = [chosen[i] for i in np.argsort(-share[:, j], kind="stable")[:3]]
        assert list(frame["top_ids"][j]) == want
    # read back by index, name and synonym; all samples with samples="all"
    for spec in (3, "3", "class 3", "C3"):
        pd.testing.assert_frame_equal(load_relevance(atlas, spec), frame)
    every = class_relevance(atlas, 3, RelevanceOptions(samples="all", device="cpu"), model=model, progress=False)
    np.testing.assert_allclose(every["rel_mean"], _expected_shares(means, c)[1].mean(0), rtol=1e-5)


def test_class_relevance_errors(share_atlas, tmp_path):
    atlas, model, _ = share_atlas
    with pytest.raises(RelevanceError, match="--samples all"):  # class 7 is never among the top 5
        class_relevance(atlas, 7, model=model, device="cpu", progress=False)
    with pytest.raises(RelevanceError, match="unitlens relevance .* --class 'c5'"):
        load_relevance(atlas, "c5")
    with pytest.raises(RelevanceError, match="no class named"):
        class_relevance(atlas, "zebra", model=model, device="cpu", progress=False)


def test_predicted_class_relevance_aggregates_per_predicted_class(share_atlas):
    atlas, model, means = share_atlas
    with pytest.raises(RelevanceError, match="--predicted"):
        relevant_classes(atlas, "conv")
    frame = predicted_relevance(atlas, model=model, device="cpu", progress=False, top_classes=2, batch_size=4)
    pred = np.argmax(means @ HEAD.double().numpy().T, 1)
    expected = {}
    for c in sorted(set(pred)):
        expected[c] = _expected_shares(means[pred == c], c)[1].mean(0)
    got = relevant_classes(atlas, "conv", top=2)
    for j in range(3):
        ranked = sorted(expected, key=lambda c: -expected[c][j])[:2]
        rows = got[got["unit"] == j]
        assert rows["class_index"].tolist() == ranked
        np.testing.assert_allclose(rows["rel_mean"], [expected[c][j] for c in ranked], rtol=1e-5)
        assert rows["class_name"].tolist() == [f"class {c}" for c in ranked]
    n = frame[(frame["unit"] == 0)].set_index("class_index")["n_samples"]
    assert all(int(n[c]) == int((pred == c).sum()) for c in n.index)
    assert relevant_classes(atlas, "conv", units=[1], top=1)["unit"].tolist() == [1]


def test_record_force_drops_stale_relevance(share_atlas, tmp_path):
    import shutil

    atlas, model, _ = share_atlas
    copy = tmp_path / "atlas"
    shutil.copytree(atlas, copy)
    assert (copy / "relevance").is_dir()
    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    record(model, str(atlas.parent / "data"), copy, enumerate_units(model.model, include=["conv"]), k=4,
           batch_size=8, num_workers=0, progress=False, force=True)
    assert not (copy / "relevance").exists()


# ------------------------------------------------------------------------------------------ no LRP: fallback
def test_token_model_has_no_relevance_and_crops_fall_back_to_activation(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from unitlens.atlas import Atlas

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=8, depth=1, num_heads=2, num_classes=3).eval()
    with pytest.raises(RelevanceUnavailable, match="activation"):
        composite_for(vit)
    rng = np.random.default_rng(0)
    write_images(tmp_path / "data", [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(6)])
    model = LoadedModel(name="tinyvit", model=vit, transform=T.Compose([T.ToTensor()]), weights="hand-built",
                        input_size=(3, 16, 16))
    atlas = Atlas(_record(model, tmp_path / "data", tmp_path / "atlas", ["blocks.0.mlp.fc1"], k=3))
    layer = "blocks.0.mlp.fc1"
    context = CropContext(atlas, model=model, device="cpu", progress=False)
    with pytest.warns(UserWarning, match="not available"):
        got = crop_examples(context, {layer: select_examples(atlas, layer, 3)}, "relevance")[layer]
    assert any("activation-map crops instead" in n for n in context.notes)
    want = crop_examples(CropContext(atlas, model=model, device="cpu", progress=False),
                         {layer: select_examples(atlas, layer, 3)}, "activation")[layer]
    assert got.crop == "activation"
    assert torch.equal(got.boxes, want.boxes) and torch.equal(got.has_box, want.has_box)


def test_masked_example_darkens_low_relevance_pixels():
    from unitlens.relevance.crops import masked_example

    image = Image.fromarray(np.full((10, 20, 3), 200, dtype=np.uint8))
    heat = torch.zeros(10, 20)
    heat[2:5, 3:8] = 1.0
    heat[6, 15] = 0.01  # below 2 % of the maximum: masked
    out = np.asarray(masked_example(image, heat))
    assert (out[2:5, 3:8] == 200).all()
    assert out[6, 15, 0] == 120 and out[0, 0, 0] == 120  # 200 x (1 - 0.4)
    crop = masked_example(image, heat, box=(3, 2, 8, 5))
    assert crop.size == (5, 3)


# ------------------------------------------------------------------------------------------ attribution graph
W_LOW = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0]])  # R, G, B, (R+G)/2
W_UP = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 2.0]])  # upper 0 reads lower 0,1; upper 1 reads lower 2,3


class TwoLayerNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lower = nn.Conv2d(3, 4, 1, bias=False)
        self.act1 = nn.ReLU()
        self.upper = nn.Conv2d(4, 2, 1, bias=False)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)  # the Norm rule: relevance spread in proportion to activations
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.lower.weight.copy_(W_LOW.view(4, 3, 1, 1))
            self.upper.weight.copy_(W_UP.view(2, 4, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))

    def forward(self, x):
        h = self.act2(self.upper(self.act1(self.lower(x))))
        return self.head(self.pool(h).flatten(1))


def test_attribution_graph_edges_follow_the_wiring(tmp_path):
    import json

    from unitlens.relevance import GraphOptions, plot_attribution_graph
    from unitlens.relevance.graph import UNLABELLED, attribution_graph

    rng = np.random.default_rng(2)
    arrays = [rng.integers(20, 256, (6, 6, 3), dtype=np.uint8) for _ in range(6)]
    write_images(tmp_path / "data", arrays)
    model = LoadedModel(name="twolayer", model=TwoLayerNet().eval(), transform=lambda im: to_int_tensor(im) / 255,
                        weights="hand-built", input_size=(3, 6, 6), extra={"class_names": ["sum", "diff"]})
    atlas = _record(model, tmp_path / "data", tmp_path / "atlas", ["lower", "upper"], k=3)
    class_relevance(atlas, "sum", model=model, samples="all", device="cpu", progress=False)
    labels = pd.DataFrame({"layer": ["lower"] * 4 + ["upper"] * 2, "unit": [0, 1, 2, 3, 0, 1],
                           "label": ["warm", "warm", "cool", "none", "a", "b"]})
    res = attribution_graph(atlas, "sum", "upper,lower", labels=labels, model=model, device="cpu", progress=False,
                            batch_size=4, min_relevance=0.0)
    assert res.meta["lower"] == "lower" and res.meta["upper"] == "upper" and res.meta["n_samples"] == 6
    # closed form: class "sum" = mean(upper0) + mean(upper1); with z+ and no bias, lower unit j receives
    # mean(lower_j) * W_UP[u, j] through upper unit u; the layer total is the logit
    x = np.stack([a.astype(np.float64).mean((0, 1)) / 255 for a in arrays])  # (N, 3) channel means
    low = x @ W_LOW.double().numpy().T  # (N, 4) lower unit means (all positive)
    logit = (low @ W_UP.double().numpy().T).sum(1)
    groups = {"warm": [0, 1], "cool": [2], UNLABELLED: [3]}
    w = {(f"upper:{u}", f"lower:{g}"): float(np.mean((low[:, units] * W_UP.double().numpy()[ui, units]).sum(1)
                                                       / logit))
         for ui, u in enumerate(["a", "b"]) for g, units in groups.items()}
    got = {(e.source, e.target): e.weight for e in res.edges.itertuples()}
    assert set(got) == set(w)
    for key, value in w.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got[("upper:a", "lower:cool")] == 0 and got[("upper:b", "lower:warm")] == 0
    nodes = res.nodes.set_index("id")
    assert nodes.loc["lower:warm", "units"] == [0, 1]
    assert nodes.loc["lower:?", "relevance"] == pytest.approx(float(np.mean(low[:, 3] * 2.0 / logit)), abs=1e-6)
    # edges into a lower group add up to its relevance (no skip connections here)
    for g in groups:
        into = sum(v for (s, t), v in got.items() if t == f"lower:{g}")
        assert into == pytest.approx(nodes.loc[f"lower:{g}", "relevance"], abs=1e-6)
    saved = json.loads(res.json_path.read_text())
    assert {n["id"] for n in saved["nodes"]} == set(nodes.index) and len(saved["edges"]) == 6
    assert saved["options"] == GraphOptions(batch_size=4, min_relevance=0.0, device="cpu").as_dict()
    assert not res.json_path.with_suffix(".png").exists()  # the figure is drawn on request
    html = res._repr_html_()
    assert "attribution graph of class 0 (sum)" in html and "lower -&gt; upper" in html
    fig = plot_attribution_graph(res, tmp_path / "graph.png")
    assert len(fig.axes[0].collections) == len(nodes)  # one dot per group
    assert (tmp_path / "graph.png").stat().st_size > 1000


def test_attribution_graph_groups_units_by_the_stored_labels(tmp_path):
    """Without labels given, the graph reads the atlas's label store: of the sets stored, the one that covers both
    layers (a SemanticLens set of one layer and the chance baseline are passed over), with the same edges as when
    those labels are given."""
    from unitlens.atlas.labels import LabelStore
    from unitlens.relevance.graph import attribution_graph

    rng = np.random.default_rng(2)
    write_images(tmp_path / "data", [rng.integers(20, 256, (6, 6, 3), dtype=np.uint8) for _ in range(6)])
    model = LoadedModel(name="twolayer", model=TwoLayerNet().eval(), transform=lambda im: to_int_tensor(im) / 255,
                        weights="hand-built", input_size=(3, 6, 6), extra={"class_names": ["sum", "diff"]})
    atlas = _record(model, tmp_path / "data", tmp_path / "atlas", ["lower", "upper"], k=3)
    class_relevance(atlas, "sum", model=model, samples="all", device="cpu", progress=False)
    labels = pd.DataFrame({"layer": ["lower"] * 4 + ["upper"] * 2, "unit": [0, 1, 2, 3, 0, 1],
                           "label": ["warm", "warm", "cool", "none", "a", "b"], "score": 1.0})
    store = LabelStore(atlas)
    store.write(labels, "invert", probe="p")
    store.write(labels.assign(label="x"), "random", probe="p")
    store.write(labels[labels["layer"] == "lower"].assign(label="y"), "semanticlens", backend="b")
    options = {"model": model, "device": "cpu", "progress": False, "batch_size": 4, "min_relevance": 0.0}
    stored = attribution_graph(atlas, "sum", "upper,lower", **options)
    given = attribution_graph(atlas, "sum", "upper,lower", labels=labels, **options)
    assert stored.meta["labels"] == "invert (probe set p)" and given.meta["labels"] == "given"
    pd.testing.assert_frame_equal(stored.edges, given.edges)
    assert set(stored.nodes["label"]) == {"warm", "cool", "?", "a", "b"}


def test_relevance_cli(share_atlas, monkeypatch):
    import json

    from rich.console import Console
    from typer.testing import CliRunner

    import unitlens.cli.common
    from unitlens.atlas import Atlas
    from unitlens.cli import app
    from unitlens.relevance import PredictedOptions

    atlas, model, _ = share_atlas
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=200, soft_wrap=True))
    monkeypatch.setattr(Atlas, "load_model", lambda _atlas: model)
    runner = CliRunner()
    res = runner.invoke(app, ["relevance", str(atlas), "--class", "c2", "--device", "cpu", "--top-n", "4"])
    assert res.exit_code == 0, res.output
    assert "most relevant units for class 2 (class 2)" in res.output
    meta = json.loads((atlas / "relevance/class_2.json").read_text())
    assert meta["options"] == RelevanceOptions(device="cpu", top_n=4).as_dict()
    res = runner.invoke(app, ["relevance", str(atlas), "--predicted", "--device", "cpu", "--top-classes", "1",
                              "--batch-size", "3"])
    assert res.exit_code == 0 and "top class" in res.output, res.output
    meta = json.loads((atlas / "relevance/predicted.json").read_text())
    assert meta["options"] == PredictedOptions(device="cpu", top_classes=1, batch_size=3).as_dict()
    assert relevant_classes(atlas, "conv", top=5).groupby("unit").size().max() == 1
    bad = runner.invoke(app, ["relevance", str(atlas), "--predicted", "--samples", "all", "--top-n", "3"])
    assert bad.exit_code == 2 and "--samples, --top-n applies to --class" in bad.output
    bad = runner.invoke(app, ["relevance", str(atlas), "--class", "c2", "--top-classes", "3"])
    assert bad.exit_code == 2 and "--top-classes applies to --predicted" in bad.output
    bad = runner.invoke(app, ["relevance", str(atlas), "--class", "c2", "--predicted"])
    assert bad.exit_code == 2 and "one of them" in bad.output
    bad = runner.invoke(app, ["relevance", str(atlas), "--class", "okapi", "--device", "cpu"])
    assert bad.exit_code == 2 and "no class named 'okapi'" in bad.output
    bad = runner.invoke(app, ["graph", str(atlas), "--class", "c2", "--layers", "conv,conv"])
    assert bad.exit_code == 2 and "two different layers" in bad.output
