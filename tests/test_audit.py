"""Audit (paper 002, 3.4 / 4.2 / 4.3) on hand-built units whose alignments, logits and pruning effects are known.

Semantic space (5-d) of a fake backend: the text "fur" and red images embed as e0, "horns" / green as e1, "palm" /
blue as e2, "cart" / yellow as e3; the empty prompt templates (and the stored dataset null of image concepts) embed
as n = (1, 1, 1, 1, 4) / √20. Valid concepts {fur, horns}, spurious {palm, cart}. The lens vectors θ of the eight
units of layer ``conv`` are written by hand, so a_valid = max_v cos(θ, v) − cos(θ, n) is known in closed form.

Model: ``conv`` (1×1, eight units: R, G, B, ...), then the spatial mean, then ``head`` whose three logits
("red", "green", "blue") are the mean R, G and B of the image (raw 0..255 values): every logit, AUC and pruning
effect below follows from the pixel values.
"""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import unitlens.cli.common
from unitlens.audit import (
    AuditOptions,
    audit_class,
    audit_test,
    audited_classes,
    prune_check,
    stored_audit,
    verdicts,
)
from unitlens.backends.base import BACKENDS, Backend
from unitlens.cli.audit import app as audit_app
from unitlens.errors import AuditError
from unitlens.lens.store import LayerLens, LensStore
from unitlens.zoo.factory import LoadedModel

from conftest import to_int_tensor, write_images

runner = CliRunner()
E = torch.eye(5)
NULL = F.normalize(torch.tensor([1.0, 1, 1, 1, 4]), dim=0)
WORDS = {"fur": E[0], "horns": E[1], "palm": E[2], "cart": E[3]}
COLOURS = {"fur": (255, 0, 0), "horns": (0, 255, 0), "palm": (0, 0, 255), "cart": (255, 255, 0)}
THETA = torch.stack([E[0], E[2], 2 * E[1] + E[3], E[4], E[0] + 3 * E[4], E[1] + 2 * E[3], E[3], E[0]])
REL_MEAN = [0.30, 0.20, 0.15, 0.10, 0.08, 0.05, 0.01, 0.11]  # rel_max = 2 × this by default: unit 6 is below
#                                                            0.028, unit 7 is constant
EXPECTED = {0: "valid", 1: "spurious", 2: "both", 3: "unexpected", 4: "unexpected", 5: "both"}


class WordColourBackend(Backend):
    """Text: a concept word -> its basis vector, no word (empty template) -> n. Images: mean colour -> vector."""

    name = "audittest"
    dim = 5

    def __init__(self, text: bool = True):
        super().__init__("cpu")
        self.has_text = text

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)

    def encode_images(self, batch):
        r, g, b = batch.mean((2, 3)).unbind(1)
        return self._finish(torch.stack([r * (1 - g), g * (1 - r), b, r * g, torch.zeros_like(r)], 1))

    def encode_text(self, texts):
        if not self.has_text:
            return super().encode_text(texts)
        return self._finish(torch.stack([next((v for w, v in WORDS.items() if w in t), NULL) for t in texts]))


BACKENDS.register("audittest", lambda spec, device=None, **kw: WordColourBackend())


class AuditNet(nn.Module):
    """conv units: 0 = R, 1 = G, 2 = B, 3 = R+G, 4 = G+B, 5 = R+B, 6 = R−B, 7 = 0; logits = mean (R, G, B)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1, bias=False)
        self.head = nn.Linear(8, 3, bias=False)
        w = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 0, -1], [0, 0, 0]])
        with torch.no_grad():
            self.conv.weight.copy_(w.float().view(8, 3, 1, 1))
            self.head.weight.copy_(torch.eye(3, 8))

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def audit_model() -> LoadedModel:
    return LoadedModel(name="auditnet", model=AuditNet().eval(), transform=to_int_tensor, weights="hand-built",
                       input_size=(3, 8, 8), extra={"class_names": ["red", "green", "blue"]})


def solid(rgbs, root, classes=None) -> None:
    write_images(root, [np.full((8, 8, 3), rgb, dtype=np.uint8) for rgb in rgbs], classes)


def relevance_frame(rel_max=None) -> pd.DataFrame:
    rel_max = rel_max or [2 * r for r in REL_MEAN]
    return pd.DataFrame({"layer": "conv", "unit": range(8), "class_index": 0, "class_name": "red",
                         "rel_mean": REL_MEAN, "rel_max": rel_max, "rel_raw_mean": REL_MEAN, "n_samples": 5,
                         "top_ids": [[u % 12, (u + 1) % 12] for u in range(8)]})


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """An atlas of AuditNet's conv layer with a hand-written lens store (θ = THETA, dataset null = n)."""
    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    root = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    write_images(root / "data", [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(12)])
    model = audit_model()
    record(model, str(root / "data"), root / "atlas", enumerate_units(model.model, include=["conv"],
                                                                      skip_first_last=False),
           k=4, batch_size=16, num_workers=0, progress=False)
    from unitlens.atlas import Atlas

    ids = Atlas(root / "atlas").exemplars("conv").top_ids[:, :2]
    store = LensStore(root / "atlas", "audittest", dim=5, create=True)
    constant = torch.zeros(8, dtype=torch.bool)
    constant[7] = True
    store.write_layer(LayerLens(
        layer="conv", theta=THETA, ids=ids, vals=torch.ones(8, 2), mask=torch.ones(8, 2, dtype=torch.bool),
        boxes=torch.zeros(8, 2, 4, dtype=torch.int64), has_box=torch.zeros(8, 2, dtype=torch.bool),
        example_index=torch.arange(16).view(8, 2), example_vectors=F.normalize(THETA, dim=1).repeat_interleave(2, 0),
        constant=constant), {"units": 8, "m": 2, "crop": "none"})
    store.write_null_image(NULL, torch.arange(12))
    concepts = root / "concepts"
    (concepts / "valid.txt").parent.mkdir(parents=True, exist_ok=True)
    (concepts / "valid.txt").write_text("fur\nhorns\n")
    (concepts / "spurious.txt").write_text("# known shortcuts\npalm\ncart\n")
    for kind, names in (("valid", ("fur", "horns")), ("spurious", ("palm", "cart"))):
        for name in names:
            solid([COLOURS[name]] * 2, concepts / kind / name)
    return root


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))


def expected_alignment(unit: int, concepts: list[str]) -> float:
    """max over concepts of cos(θ, p) − cos(θ, n), by brute force in float64."""
    theta = THETA[unit].double() / THETA[unit].double().norm()
    return max(float(theta @ WORDS[c].double()) for c in concepts) - float(theta @ NULL.double())


# ---------------------------------------------------------------------------------------------- verdicts
def test_verdict_rule_on_the_signs():
    got = verdicts(np.array([0.1, 0.0, -0.2, 0.3, 0.0]), np.array([0.0, 0.2, -0.1, 0.3, 0.0]))
    assert list(got) == ["valid", "spurious", "unexpected", "both", "unexpected"]


def test_audit_verdicts_alignments_and_summary(atlas):
    others = pd.DataFrame({"layer": "conv", "unit": [0, 0, 1], "class_index": [0, 2, 1],
                           "class_name": ["red", "blue", "green"], "rel_mean": [0.3, 0.12, 0.07]})
    res = audit_class(atlas / "atlas", "red", atlas / "concepts" / "valid.txt", atlas / "concepts" / "spurious.txt",
                      relevance=relevance_frame(), other_classes=others)
    frame = res.frame.set_index("unit")
    assert list(res.frame["unit"]) == [0, 1, 2, 3, 4, 5]  # most relevant first; 6 below the bar, 7 constant
    assert frame["verdict"].to_dict() == EXPECTED
    assert frame.loc[2, "leans"] == "valid" and frame.loc[5, "leans"] == "spurious" and frame.loc[0, "leans"] == ""
    for unit in EXPECTED:
        assert frame.loc[unit, "a_valid"] == pytest.approx(expected_alignment(unit, ["fur", "horns"]), abs=1e-6)
        assert frame.loc[unit, "a_spur"] == pytest.approx(expected_alignment(unit, ["palm", "cart"]), abs=1e-6)
    # unit 4 contains "fur" (cos 0.32) but is closer to the null: without the null it would be valid
    assert frame.loc[4, "a_valid"] < 0 < float(F.normalize(THETA[4], dim=0) @ E[0])
    assert frame.loc[2, "valid_concept"] == "horns" and frame.loc[5, "spurious_concept"] == "cart"
    assert frame.loc[0, "other_classes"] == "blue (12.0%)" and frame.loc[1, "other_classes"] == "green (7.0%)"
    assert frame.loc[3, "other_classes"] == ""
    assert res.n_constant == 1 and any("constant" in n for n in res.notes)
    summary = res.summary.set_index("verdict")
    assert summary["units"].to_dict() == {"valid": 1, "spurious": 1, "both": 2, "unexpected": 2, "not relevant": 1}
    assert summary["rel_share"].to_dict() == pytest.approx(
        {"valid": 0.30, "spurious": 0.20, "both": 0.20, "unexpected": 0.18, "not relevant": 0.01})
    assert list(res.flagged["unit"]) == [1, 3, 4]
    html = res._repr_html_()  # the notebook view: class, verdict counts, the units table
    assert "audit of class 0 &#x27;red&#x27;" in html and "valid 1, spurious 1, both 2, unexpected 2" in html
    assert frame.loc[0, "relevant_ids"] == [0, 1] and len(frame.loc[0, "exemplars"]) == 2
    # written, and read back by class index
    assert audited_classes(atlas / "atlas")[["class_index", "class_name"]].values.tolist() == [[0, "red"]]
    stored = stored_audit(atlas / "atlas", 0)
    assert stored.set_index("unit")["verdict"].to_dict() == EXPECTED
    assert res.path.name == "class0-red.parquet" and res.path.with_suffix(".csv").is_file()
    meta = json.loads(res.path.with_suffix(".json").read_text())
    assert meta["valid"] == ["fur", "horns"] and meta["relevance_column"] == "rel_max"
    assert meta["options"] == AuditOptions().as_dict() == res.options.as_dict()


def test_image_folder_concepts_match_text_concepts(atlas):
    kw = dict(relevance=relevance_frame(), other_classes=relevance_frame().iloc[:0], write=False)
    text = audit_class(atlas / "atlas", 0, atlas / "concepts" / "valid.txt", atlas / "concepts" / "spurious.txt", **kw)
    image = audit_class(atlas / "atlas", 0, atlas / "concepts" / "valid", atlas / "concepts" / "spurious", **kw)
    cols = ["unit", "a_valid", "a_spur", "verdict"]
    pd.testing.assert_frame_equal(text.frame[cols], image.frame[cols], atol=1e-6)
    # where the best concept is unique, it is the same (ties such as unit 0's spurious side depend on order)
    for frame in (text.frame, image.frame):
        f = frame.set_index("unit")
        assert (f.loc[2, "valid_concept"], f.loc[5, "spurious_concept"], f.loc[1, "spurious_concept"]) == \
            ("horns", "cart", "palm")


class ModelColourBackend(WordColourBackend):
    """The colour backend whose image encoder first prepares a conv model (as real backends do), noting whether
    ``prepare_model`` made it channels-last."""

    def __init__(self):
        super().__init__()
        self.formats: list[bool] = []

    def encode_images(self, batch):
        from unitlens.runtime import prepare_model

        net = prepare_model(nn.Conv2d(3, 4, 3), torch.device("cpu"))
        self.formats.append(net.weight.is_contiguous(memory_format=torch.channels_last))
        return super().encode_images(batch)


def test_alignment_runs_the_backend_as_channels_last_says(atlas):
    """``channels_last`` of ``AuditOptions`` reaches the embedding of image concepts (on by default, off when
    asked), and the verdicts do not depend on it."""
    kw = dict(relevance=relevance_frame(), other_classes=relevance_frame().iloc[:0], write=False)
    concepts = (atlas / "concepts" / "valid", atlas / "concepts" / "spurious")
    on, off = ModelColourBackend(), ModelColourBackend()
    with_cl = audit_class(atlas / "atlas", 0, *concepts, backend=on, **kw)
    without = audit_class(atlas / "atlas", 0, *concepts, AuditOptions(channels_last=False), backend=off, **kw)
    assert on.formats and set(on.formats) == {True} and off.formats and set(off.formats) == {False}
    pd.testing.assert_frame_equal(with_cl.frame[["unit", "verdict"]], without.frame[["unit", "verdict"]])


def test_relevance_filter_and_stat(atlas):
    kw = dict(other_classes=relevance_frame().iloc[:0], write=False)
    valid, spurious = ["fur", "horns"], ["palm", "cart"]
    by_mean = audit_class(atlas / "atlas", 0, valid, spurious, relevance=relevance_frame(), relevance_stat="mean",
                          min_relevance=0.12, **kw)
    assert list(by_mean.frame["unit"]) == [0, 1, 2]  # rel_mean 0.30, 0.20, 0.15
    assert by_mean.frame["relevance"].tolist() == by_mean.frame["rel_mean"].tolist()
    # by the maximum (the default), unit 6 (pure "cart") becomes relevant, and is spurious
    rel_max = [0.6, 0.4, 0.3, 0.2, 0.16, 0.1, 0.5, 0.2]
    by_max = audit_class(atlas / "atlas", 0, valid, spurious, relevance=relevance_frame(rel_max), **kw)
    assert by_max.frame["unit"].tolist() == [0, 6, 1, 2, 3, 4, 5]
    assert by_max.frame.set_index("unit").loc[6, "verdict"] == "spurious"
    none = audit_class(atlas / "atlas", 0, valid, spurious, relevance=relevance_frame(), min_relevance=0.9, **kw)
    assert none.frame.empty and any("lower --min-relevance" in n for n in none.notes)


def test_audit_errors(atlas):
    kw = dict(relevance=relevance_frame(), other_classes=relevance_frame().iloc[:0], write=False)
    with pytest.raises(AuditError, match="has no text encoder.*folder of concept folders"):
        audit_class(atlas / "atlas", 0, atlas / "concepts" / "valid.txt", atlas / "concepts" / "spurious",
                    backend=WordColourBackend(text=False), **kw)
    with pytest.raises(AuditError, match="no rows of class 2"):
        audit_class(atlas / "atlas", 2, ["fur"], ["palm"], **kw)
    on_head = relevance_frame().assign(layer="head")
    with pytest.raises(AuditError, match="unitlens lens embed"):
        audit_class(atlas / "atlas", 0, ["fur"], ["palm"], relevance=on_head, write=False)


def test_audit_on_stored_crp_relevance(atlas, tmp_path):
    """With relevance=None the audit reads what ``unitlens.relevance`` stored. The red logit is the mean of conv
    unit 0 alone (head weights), so CRP gives unit 0 the whole relevance of every sample and no other unit any."""
    import shutil

    from unitlens.errors import RelevanceError
    from unitlens.relevance import class_relevance

    copy = tmp_path / "atlas"
    shutil.copytree(atlas / "atlas", copy)
    class_relevance(copy, "red", model=audit_model(), progress=False)
    res = audit_class(copy, "red", atlas / "concepts" / "valid.txt", atlas / "concepts" / "spurious.txt",
                      other_classes=relevance_frame().iloc[:0], write=False)
    assert res.frame["unit"].tolist() == [0] and res.frame["verdict"].tolist() == ["valid"]
    assert res.frame["relevance"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert (res.class_index, res.class_name) == (0, "red")
    with pytest.raises(RelevanceError, match="unitlens relevance"):  # a class without stored relevance
        audit_class(copy, "blue", ["fur"], ["palm"], write=False)


# ---------------------------------------------------------------------------------------------- model test
def test_audit_test_auc_identical_separable_and_brute_force(tmp_path):
    model = audit_model()
    solid([(v, 0, 0) for v in (10, 30, 50, 60)], tmp_path / "valid")
    solid([(v, 0, 0) for v in (20, 40)], tmp_path / "spur")
    solid([(v, 5, 5) for v in (200, 220)], tmp_path / "bright")
    solid([(v, 5, 5) for v in (10, 20)], tmp_path / "dark")
    auc = audit_test(model, "red", tmp_path / "valid", tmp_path / "valid").auc
    assert auc == 0.5
    res = audit_test(model, 0, tmp_path / "bright", tmp_path / "dark")
    auc, table = res.auc, res.table
    assert auc == 1.0 and "AUC</th><td style='text-align:left'>1.0000" in res._repr_html_()
    rows = table.set_index("set")
    assert rows.loc["valid", "logit_mean"] == 210 and rows.loc["spurious", "logit_mean"] == 15
    assert rows.loc["spurious", "rank_mean"] == 1 and res.class_name == "red"
    auc = audit_test(model, "red", tmp_path / "valid", tmp_path / "spur").auc
    pairs = [(v > s) + 0.5 * (v == s) for v in (10, 30, 50, 60) for s in (20, 40)]
    assert auc == pytest.approx(sum(pairs) / len(pairs))  # 5/8
    table = audit_test(model, "green", tmp_path / "bright", tmp_path / "dark").table
    # green logit 5 vs red 200+: rank 2 of 3 for bright, rank 2 for dark (10, 20 > 5)
    assert table.set_index("set")["rank_mean"].tolist() == [2, 2] and table["top1"].tolist() == [0, 0]


# ---------------------------------------------------------------------------------------------- prune
def test_prune_zeroing_a_unit_changes_logit_and_accuracy(tmp_path):
    model = audit_model()
    solid([(200, 30, 10)] * 2 + [(20, 180, 40)] * 2 + [(10, 20, 160)] * 2, tmp_path / "labelled",
          ["red"] * 2 + ["green"] * 2 + ["blue"] * 2)
    solid([(100, 90, 10), (120, 60, 30)], tmp_path / "spurious")
    res = prune_check(model, {"conv": [0]}, "red", labelled=tmp_path / "labelled", spurious=tmp_path / "spurious")
    t = res.table.set_index("measure")
    # red logit = mean R goes to 0: the red images become green (30 > 10), the spurious logit drops by its mean
    assert t.loc["top-1 accuracy, all images", ["before", "after"]].tolist() == pytest.approx([1.0, 4 / 6])
    assert t.loc["top-1 accuracy, images of class red", ["before", "after"]].tolist() == [1.0, 0.0]
    assert t.loc["logit of red, mean", ["before", "after", "change"]].tolist() == [110.0, 0.0, -110.0]
    assert t.loc["red is top-1, rate", ["before", "after"]].tolist() == [1.0, 0.0]
    assert t.loc["rank of red, mean", "after"] == 3.0
    per = res.per_class.set_index("folder")
    assert per.loc["red", "top1_after"] == 0 and per.loc["green", "top1_after"] == 1
    assert "1 units: 0" in res._repr_html_() and "top-1 accuracy per labelled class" in res._repr_html_()
    # a channel-last layer: zeroing head output 1 is the green logit itself
    res = prune_check(model, {"head": [1]}, "green", labelled=tmp_path / "labelled")
    t = res.table.set_index("measure")
    assert t.loc["top-1 accuracy, images of class green", ["before", "after"]].tolist() == [1.0, 0.0]
    assert t.loc["top-1 accuracy, all images", "after"] == pytest.approx(4 / 6)
    # the hooks are gone afterwards
    with torch.no_grad():
        assert model.model(to_int_tensor(Image.new("RGB", (8, 8), (9, 9, 9)))[None]).tolist() == [[9.0, 9.0, 9.0]]


def test_prune_mean_ablation_and_batch_norm_note(atlas, tmp_path):
    # ablate='mean' sets conv unit 0 (R) to its mean over the atlas's 12 images: the red logit becomes that mean
    rng = np.random.default_rng(0)  # the fixture's images
    mean_red = np.mean([rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)[..., 0].mean() for _ in range(12)])
    solid([(100, 90, 10), (120, 60, 30)], tmp_path / "spurious")
    res = prune_check(audit_model(), {"conv": [0]}, "red", spurious=tmp_path / "spurious", ablate="mean",
                      atlas=atlas / "atlas")
    t = res.table.set_index("measure")
    assert t.loc["logit of red, mean", "after"] == pytest.approx(mean_red, rel=1e-6) and not res.notes
    with pytest.raises(AuditError, match="give the atlas"):
        prune_check(audit_model(), {"conv": [0]}, "red", spurious=tmp_path / "spurious", ablate="mean")

    class BNNet(nn.Module):  # conv -> batch norm: zeroing the conv output is not zeroing the channel
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Linear(2, 2)

        def forward(self, x):
            return self.head(self.bn(self.conv(x)).mean((2, 3)))

    bn = LoadedModel(name="bnnet", model=BNNet().eval(), transform=to_int_tensor, weights="hand-built")
    res = prune_check(bn, {"conv": [1]}, 0, spurious=tmp_path / "spurious")
    assert len(res.notes) == 1 and "feeds a batch norm" in res.notes[0]
    assert not prune_check(bn, {"bn": [1]}, 0, spurious=tmp_path / "spurious").notes


def test_prune_errors(tmp_path):
    model = audit_model()
    solid([(200, 30, 10), (10, 20, 160)], tmp_path / "labelled", ["red", "purple_ish"])
    with pytest.raises(AuditError, match="'purple_ish' name no class"):
        prune_check(model, {"conv": [0]}, "red", labelled=tmp_path / "labelled")
    solid([(1, 2, 3)], tmp_path / "spur")
    with pytest.raises(AuditError, match="out of range: it has 8 units"):
        prune_check(model, {"conv": [8]}, "red", spurious=tmp_path / "spur")
    with pytest.raises(ValueError, match="matches no module"):
        prune_check(model, {"nope": [0]}, "red", spurious=tmp_path / "spur")


# ---------------------------------------------------------------------------------------------- CLI and plots
def test_plots_return_figures_and_save_when_given_a_path(atlas, tmp_path):
    from matplotlib.figure import Figure

    from unitlens.audit import plot_audit, plot_flagged_units

    kw = dict(relevance=relevance_frame(), other_classes=relevance_frame().iloc[:0], write=False)
    res = audit_class(atlas / "atlas", 0, ["fur", "horns"], ["palm", "cart"], **kw)
    scatter = plot_audit(res)
    assert isinstance(scatter, Figure) and not list(tmp_path.iterdir())  # no path: nothing saved
    dots = [len(c.get_offsets()) for ax in scatter.axes for c in ax.collections]
    assert sum(dots) == len(res.frame) == 6  # one dot per judged unit
    sheet = plot_flagged_units(res, tmp_path / "flagged.png")
    # one row per flagged unit (1, 3, 4): its text, 5 concept-example slots and its 2 most relevant samples
    assert len(sheet.axes) == len(res.flagged) * (1 + res.options.exemplars + 2) == 24
    plot_audit(res, tmp_path / "scatter.png")
    for name in ("scatter.png", "flagged.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 400 and im.size[1] > 150
    # only unit 0 (valid) reaches 0.5: nothing flagged, no sheet and no file
    valid_only = audit_class(atlas / "atlas", 0, ["fur", "horns"], ["palm", "cart"], min_relevance=0.5, **kw)
    assert valid_only.frame["unit"].tolist() == [0]
    assert plot_flagged_units(valid_only, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def fake_relevance_module(frame: pd.DataFrame) -> types.ModuleType:
    """Stands in for unitlens.relevance: stored relevance of class 0, no --predicted run."""
    from unitlens.errors import RelevanceError

    mod = types.ModuleType("unitlens.relevance")

    def load_relevance(atlas, cls):
        if str(cls) not in ("0", "red"):
            raise RelevanceError(f"no relevance of class {cls}; run unitlens relevance {atlas} --class {cls}")
        return frame

    def relevant_classes(atlas, layer, units=None, top=5):
        raise RelevanceError(f"run unitlens relevance {atlas} --predicted first")

    mod.RelevanceError, mod.load_relevance, mod.relevant_classes = RelevanceError, load_relevance, relevant_classes
    return mod


def test_cli_audit_test_and_prune(atlas, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "unitlens.relevance", fake_relevance_module(relevance_frame()))
    a = str(atlas / "atlas")
    out = runner.invoke(audit_app, [a, "--class", "red", "--valid", str(atlas / "concepts" / "valid"),
                                    "--spurious", str(atlas / "concepts" / "spurious"), "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "6 units of conv relevant for class 0 'red'" in out.output and "unexpected" in out.output
    assert "--predicted" in out.output and (tmp_path / "class0-red_scatter.png").is_file()
    bad = runner.invoke(audit_app, ["alignment", a, "--class", "blue", "--valid", str(atlas / "concepts" / "valid"),
                                    "--spurious", str(atlas / "concepts" / "spurious")])
    assert bad.exit_code == 2 and "unitlens relevance" in bad.output
    # test and prune with the model saved as a module (ImageNet preprocessing; the class given by index)
    saved = tmp_path / "auditnet.pt"
    torch.save(AuditNet(), saved)
    solid([(220, 5, 5)] * 2, tmp_path / "bright")
    solid([(20, 5, 5)] * 2, tmp_path / "dark")
    out = runner.invoke(audit_app, ["test", "--model", str(saved), "--class", "0", "--valid-images",
                                    str(tmp_path / "bright"), "--spurious-images", str(tmp_path / "dark")])
    assert out.exit_code == 0 and "AUC = 1.0000" in out.output, out.output
    solid([(200, 30, 10), (20, 180, 40)], tmp_path / "labelled", ["0", "1"])
    out = runner.invoke(audit_app, ["prune", a, "--model", str(saved), "--class", "0", "--from-audit",
                                    "--labelled", str(tmp_path / "labelled"), "--spurious-images",
                                    str(tmp_path / "dark")])
    assert out.exit_code == 0, out.output
    assert "1 units zeroed" in out.output and "top-1 accuracy, all images" in out.output  # spurious unit 1
    bad = runner.invoke(audit_app, ["prune", "--model", str(saved), "--class", "0", "--units", "conv"])
    assert bad.exit_code == 2 and "LAYER:UNIT" in bad.output
    bad = runner.invoke(audit_app, ["test", "--class", "0", "--valid-images", "x", "--spurious-images", "y"])
    assert bad.exit_code == 2 and "--model" in bad.output
