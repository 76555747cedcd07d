"""The three labellers and the held-out faithfulness of their labels, on a hand-built model whose units are exact
indicators of colour concepts (see ``conftest.PresenceNet``), embedded by a colour-histogram backend.

Independent expectations: sklearn's roc_auc_score (AUC by ranks), a direct loop over the formula of the
CLIP-Dissect paper (soft-WPMI), brute force over every formula (INVERT's beam search), the planted units.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import unitlens.cli.common
import unitlens.probe.faithfulness
from unitlens.atlas import Atlas
from unitlens.cli.lens import app as lens_app
from unitlens.errors import BadInput, LensError
from unitlens.lens import embed_units
from unitlens.probe import (
    ProbeStore,
    auc_by_ranks,
    beam_search,
    evaluate_labels,
    formulas,
    holdout_split,
    label_units,
    labeller,
    plot_label_faithfulness,
    record_probe,
    row_ranks,
    soft_wpmi,
)
from unitlens.probe.invert import terms_of

from conftest import COMBOS, colour_probe_csv, presence_model, register_colour_backends

register_colour_backends()
runner = CliRunner()
RED, GREEN, BLUE, RED_NOT_GREEN, CONSTANT = range(5)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    root = tmp_path_factory.mktemp("labels")
    data = colour_probe_csv(root / "data", COMBOS, per=3, seed=1).parent / "images"
    model = presence_model()
    infos = enumerate_units(model.model, include=["detect", "presence"])
    record(model, str(data), root / "atlas", infos, k=6, batch_size=8, num_workers=0, progress=False)
    embed_units(root / "atlas", "labeltest", m=4, progress=False)
    record_probe(root / "atlas", colour_probe_csv(root / "probe", COMBOS, per=4, seed=9), model=model,
                progress=False)
    return root / "atlas"


# ---------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("method", ["semanticlens", "clip-dissect", "invert", "random"])
def test_every_labeller_is_registered_under_its_name_and_built_from_its_options(method):
    """Each registered labeller (its module imported on first use) carries its registry name, takes exactly the
    option fields it declares, and is built from them: a changed option reaches it."""
    from unitlens.probe import LABELLERS, LabelOptions
    from unitlens.probe.options import OWN_OPTIONS

    assert method in LABELLERS.names()
    cls = LABELLERS.get(method)
    assert cls.name == method and set(cls.settings) <= {s.name for s in LabelOptions.specs()}
    assert set(cls.settings) == {k for k, owner in OWN_OPTIONS.items() if owner == method} - {
        "parents", "text_null", "image_null"}  # those three are read by the concept-file path, not the labeller
    changed = {name: LabelOptions.spec(name).default + 1 for name in cls.settings}
    built = labeller(method, LabelOptions(method=method, **changed))
    assert {name: getattr(built, name) for name in cls.settings} == changed


# ---------------------------------------------------------------------------------------------- AUC by ranks
def test_auc_by_ranks_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 5, (7, 40)).astype(np.float32)  # many ties
    Y = rng.random((40, 6)) < 0.4
    ours = auc_by_ranks(row_ranks(torch.from_numpy(acts)), Y)
    for u, f in itertools.product(range(7), range(6)):
        assert ours[u, f] == pytest.approx(roc_auc_score(Y[:, f], acts[u]), abs=1e-12)
    assert np.isnan(auc_by_ranks(row_ranks(acts), np.zeros((40, 1), bool))).all()


# ---------------------------------------------------------------------------------------------- CLIP-Dissect
def _soft_wpmi_direct(acts, sims, top_k, scale, lam, p_start, p_end, min_prob):
    """The paper's soft-WPMI written out with loops over units, concepts and images."""
    U, n = acts.shape
    M = sims.shape[1]
    p_tx = [[math.exp(scale * sims[i][m]) / sum(math.exp(scale * sims[i][j]) for j in range(M)) for m in range(M)]
            for i in range(n)]
    log_given = np.zeros((U, M))
    for u in range(U):
        ranked = sorted(range(n), key=lambda i: (-acts[u][i], i))
        for m in range(M):
            total = 0.0
            for r, i in enumerate(ranked):
                p_in = p_start - r / top_k * (p_start - p_end) if r < top_k else 0.0
                total += math.log(p_in * p_tx[i][m] + 1 - p_in + min_prob)
            log_given[u, m] = total
    log_prior = [math.log(sum(math.exp(log_given[u, m]) for u in range(U)) / U) for m in range(M)]
    return np.array([[log_given[u, m] - lam * log_prior[m] for m in range(M)] for u in range(U)])


def test_soft_wpmi_equals_the_papers_formula():
    acts = np.array([[5.0, 1.0, 3.0, 3.0, 0.0, 2.0], [0.0, 4.0, 1.0, 6.0, 2.0, 2.0], [1.0, 1.0, 1.0, 9.0, 0.0, 1.0]])
    sims = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.6, 0.5, 0.2], [0.1, 0.3, 0.95], [0.4, 0.4, 0.4],
                     [0.7, 0.2, 0.1]])
    for top_k, lam in ((4, 1.0), (2, 0.5), (10, 1.0)):
        ours = soft_wpmi(torch.tensor(acts), torch.tensor(sims), top_k=top_k, scale=10.0, lam=lam, p_start=0.998,
                         p_end=0.97, min_prob=1e-7)
        direct = _soft_wpmi_direct(acts, sims, top_k, 10.0, lam, 0.998, 0.97, 1e-7)
        np.testing.assert_allclose(ours.numpy(), direct, rtol=1e-10, atol=1e-10)
        as_stored = soft_wpmi(torch.tensor(acts, dtype=torch.float32), torch.tensor(sims), top_k=top_k, lam=lam)
        np.testing.assert_allclose(as_stored.numpy(), direct, rtol=1e-10, atol=1e-10)  # the float32 top-k path


# ---------------------------------------------------------------------------------------------- INVERT
def _brute_force(acts, member, length, min_count, max_count):
    """Every left-deep formula of at most ``length`` atoms whose every prefix holds for min..max images (the space
    the beam search walks), scored with sklearn; the best AUC per unit."""
    K = member.shape[1]
    atoms = [(k, neg) for neg in (False, True) for k in range(K)]

    def col(k, neg):
        return ~member[:, k] if neg else member[:, k]

    frontier = [((("", k, neg),), col(k, neg)) for k, neg in atoms if min_count <= col(k, neg).sum() <= max_count]
    every = list(frontier)
    for _ in range(length - 1):
        grown = []
        for terms, ind in frontier:
            for k, neg in atoms:
                for op in ("AND", "OR"):
                    new = ind & col(k, neg) if op == "AND" else ind | col(k, neg)
                    if min_count <= new.sum() <= max_count:
                        grown.append((terms + ((op, k, neg),), new))
        every += grown
        frontier = grown
    best = [max(roc_auc_score(ind, a) for _, ind in every) for a in acts]
    return np.array(best), every


def test_invert_beam_search_equals_brute_force():
    rng = np.random.default_rng(3)
    n, K = 36, 3
    member = rng.random((n, K)) < 0.35
    acts = rng.normal(size=(6, n))
    acts[0] = (member[:, 0] & ~member[:, 1]) + rng.random(n) * 0.1  # one near-planted unit
    min_count, max_count = 2, 18
    best, every = _brute_force(acts, member, 3, min_count, max_count)
    atoms = np.concatenate([member, ~member], 1)
    wide = beam_search(row_ranks(acts), atoms, length=3, beam=100_000, min_count=min_count, max_count=max_count)
    np.testing.assert_allclose(wide.auc, best, atol=1e-12)
    names = ["a", "b", "c"]
    for u in range(len(acts)):
        terms = terms_of(wide.atoms[u], wide.ops[u], names)
        ind = formulas.indicator(terms, member, names)
        assert min_count <= ind.sum() <= max_count and len(terms) <= 3
        assert roc_auc_score(ind, acts[u]) == pytest.approx(best[u], abs=1e-12)
    # the paper's narrow beam never beats brute force, and finds the optimum of length-1 searches exactly
    narrow = beam_search(row_ranks(acts), atoms, length=3, beam=3, min_count=min_count, max_count=max_count)
    assert (narrow.auc <= best + 1e-12).all()
    single = beam_search(row_ranks(acts), atoms, length=1, beam=1, min_count=min_count, max_count=max_count)
    np.testing.assert_allclose(single.auc, _brute_force(acts, member, 1, min_count, max_count)[0], atol=1e-12)


def test_invert_writes_each_formula_in_one_canonical_order():
    """Two units selective for "a or b" label as one formula whichever atom their beam started from; the operands of
    each run of one operator are sorted (which keeps the formula's indicator)."""
    rng = np.random.default_rng(5)
    member = rng.random((40, 3)) < 0.25
    either = (member[:, 0] | member[:, 1]).astype(float)
    noise = rng.random((2, 40))  # a or b images above all others, but neither a nor b alone separates them
    acts = np.stack([either * (1 + noise[0] + 0.3 * member[:, 0]), either * (1 + noise[1] + 0.3 * member[:, 1])])
    found = beam_search(row_ranks(acts), np.concatenate([member, ~member], 1), length=2, beam=4, max_count=39)
    assert [int(found.atoms[u, 0]) for u in range(2)] == [0, 1]  # the beam's formulas: a OR b, b OR a
    terms = [terms_of(found.atoms[u], found.ops[u], ["a", "b", "c"]) for u in range(2)]
    assert terms[0] == terms[1] == [("", "a", False), ("OR", "b", False)] and (found.auc == 1.0).all()
    shuffled = [("", "d", False), ("AND", "b", True), ("OR", "c", False), ("OR", "a", True), ("AND", "b", False)]
    canonical = formulas.canonical(shuffled)
    assert formulas.render(canonical) == "((NOT b AND d) OR NOT a OR c) AND b"
    names = list("abcd")
    wide = rng.random((64, 4)) < 0.5
    np.testing.assert_array_equal(formulas.indicator(canonical, wide, names), formulas.indicator(shuffled, wide, names))
    assert formulas.canonical(canonical) == canonical


def test_formula_rendering():
    terms = [("", "a", False), ("OR", "b", False), ("AND", "c", True), ("AND", "d", False)]
    assert formulas.render(terms) == "(a OR b) AND NOT c AND d"
    member = np.array([[1, 0, 0, 1], [0, 1, 1, 1], [0, 1, 0, 1], [1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(formulas.indicator(terms, member, list("abcd")), [True, False, True, False])


# ---------------------------------------------------------------------------------------------- planted units
def test_planted_units_get_their_labels_with_held_out_auc_1(atlas):
    res = evaluate_labels(atlas, layers=["presence"], backend="labeltest", top_k=6, length=2)
    units = res.units.set_index(["method", "unit"])
    store = ProbeStore.open(atlas)
    for unit, colour in ((RED, "red"), (GREEN, "green"), (BLUE, "blue")):
        for method in ("semanticlens", "clip-dissect", "invert"):
            row = units.loc[(method, unit)]
            assert row["label"] == colour, (method, unit, row["label"])
            assert row["auc"] == 1.0 and row["act_diff"] > 0
    row = units.loc[("invert", RED_NOT_GREEN)]
    terms = formulas.from_json(row["formula"])
    member = store.membership
    np.testing.assert_array_equal(formulas.indicator(terms, member, store.concepts), member[:, 0] & ~member[:, 1])
    assert len(terms) == 2 and row["auc"] == 1.0 and row["score"] == 1.0
    for method in ("semanticlens", "clip-dissect", "invert", "random"):
        assert units.loc[(method, CONSTANT), "label"] == "none"
    summary = res.summary.set_index("method")
    assert summary.loc["invert", "labelled"] == 4 and summary.loc["invert", "share_auc_ge_0.9"] == 1.0
    assert summary.loc["random", "mean_auc"] < 1.0
    agree = res.agreement.set_index(["method_a", "method_b"])
    assert agree.loc[("semanticlens", "clip-dissect"), "same"] >= 3
    assert res.paths["figure"].is_file() and res.paths["summary"].is_file()
    assert "held out" in res._repr_html_() and "invert" in res._repr_html_()
    fig = plot_label_faithfulness(res)  # the figure for Python users: one panel per layer, a box per method
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(res.split["methods"])
    assert res.split["n_heldout"] + res.split["n_labelling"] == store.n_images


def test_labels_are_picked_on_the_labelling_split_only(atlas, monkeypatch):
    seen = []
    real = unitlens.probe.faithfulness.labeller

    def spy(method, options=None, **params):
        inner = real(method, options, **params)

        class Spy:
            def label(self, ctx, layers):
                seen.append(np.asarray(ctx.rows).copy())
                return inner.label(ctx, layers)

        return Spy()

    monkeypatch.setattr(unitlens.probe.faithfulness, "labeller", spy)
    res = evaluate_labels(atlas, methods=("invert", "random"), layers=["presence"], holdout=0.4, seed=7,
                          write=False)
    store = ProbeStore.open(atlas)
    label_rows, held = holdout_split(store.membership, 0.4, 7)
    assert len(seen) == 2 and all(np.array_equal(s, label_rows) for s in seen)
    assert not set(label_rows) & set(held)
    judged = res.units[res.units["label"] != "none"]
    assert ((judged["n_pos"] + judged["n_neg"]) == len(held)).all()


def test_image_concepts_and_text_less_backends(atlas, tmp_path):
    with pytest.raises(LensError, match="text tower.*offline-vl.*probe-images"):
        label_units(atlas, method="clip-dissect", backend="labeltest-notext", write=False)
    frame = label_units(atlas, method="clip-dissect", concepts="probe-images", backend="labeltest-notext",
                        write=False, top_k=6).frame
    rows = frame[frame["layer"] == "presence"].set_index("unit")
    assert rows.loc[RED, "label"] == "red" and rows.loc[GREEN, "label"] == "green"
    with pytest.raises(BadInput, match="unknown labelling method"):
        labeller("network-dissection")
    with pytest.raises(BadInput, match=r"threshold \(--threshold\) is an option of the semanticlens method, not of "
                                       "invert"):
        label_units(atlas, method="invert", threshold=0.1, write=False)
    bad = runner.invoke(lens_app, ["label", str(atlas), "--method", "clip-dissect", "--length", "2"])
    assert bad.exit_code == 2 and "length (--length) is an option of the invert method" in bad.output
    (tmp_path / "concepts.txt").write_text("red\npurple\n")
    with pytest.raises(BadInput, match="purple is not among them"):
        label_units(atlas, method="invert", concepts=str(tmp_path / "concepts.txt"), write=False)


# ---------------------------------------------------------------------------------------------- contrast
def _one_class_probe(root):
    """A probe folder with a single concept folder: every image shows "red", none shows anything else."""
    from PIL import Image

    from conftest import stripe_image

    rng = np.random.default_rng(4)
    (root / "red").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(stripe_image(("red",), (32, 32), rng)).save(root / "red" / f"{i}.png")
    return root


def test_a_probe_set_without_contrast_is_refused_and_constant_concepts_are_left_out(atlas, tmp_path):
    """One class: every labeller that needs images with and without a concept refuses it, naming the fix. A concept
    true on every probe image is left out of the labels with one warning naming it."""
    record_probe(atlas, _one_class_probe(tmp_path / "one"), name="one", model=presence_model(), progress=False)
    for method in ("invert", "clip-dissect", "semanticlens", "random"):
        with pytest.raises(BadInput, match=r"one class.*red.*images of other concepts"):
            label_units(atlas, method=method, probe="one", backend="labeltest", write=False)
    with pytest.raises(BadInput, match=r"one class"):
        evaluate_labels(atlas, probe="one", backend="labeltest", write=False)
    out = runner.invoke(lens_app, ["evaluate-labels", str(atlas), "--probe", "one", "--backend", "labeltest"])
    assert out.exit_code == 2 and "one class" in out.output and "nan" not in out.output.lower()
    # a concept column that is 1 on every image (here "shape") says nothing about any unit
    csv = colour_probe_csv(tmp_path / "const", COMBOS, per=4, seed=9)
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",shape"] + [line + ",1" for line in lines[1:]]) + "\n")
    record_probe(atlas, csv, name="const", model=presence_model(), progress=False)
    for method, params in (("invert", {"length": 2}), ("clip-dissect", {"top_k": 6})):
        with pytest.warns(UserWarning, match=r"shape") as caught:
            frame = label_units(atlas, method=method, probe="const", backend="labeltest", layers=["presence"],
                                write=False, **params).frame
        assert len([w for w in caught if "shape" in str(w.message)]) == 1
        assert not frame["label"].str.contains("shape").any() and frame["label"].ne("none").any()
    with pytest.warns(UserWarning, match=r"shape") as caught:
        res = evaluate_labels(atlas, probe="const", backend="labeltest", layers=["presence"], write=False, top_k=6,
                              length=2)
    assert len([w for w in caught if "shape" in str(w.message)]) == 1  # once, not once per method
    assert not res.units["label"].str.contains("shape").any()


def test_evaluate_labels_says_why_a_value_is_missing(atlas):
    """NaN in the printed tables comes with a note naming its cause (here: a threshold no unit reaches)."""
    out = runner.invoke(lens_app, ["evaluate-labels", str(atlas), "--backend", "labeltest", "--top-k", "6",
                                   "--layers", "presence", "--length", "2", "--threshold", "2", "--no-figure"])
    assert out.exit_code == 0, out.output
    assert "nan" in out.output.lower()
    assert "semanticlens labelled no unit of presence" in out.output and "threshold" in out.output
    res = evaluate_labels(atlas, layers=["presence"], backend="labeltest", write=False, threshold=2.0, top_k=6)
    missing = res.summary[res.summary["mean_auc"].isna()]
    assert list(missing["method"]) == ["semanticlens"]
    assert any("semanticlens" in n and "presence" in n for n in res.notes)


# ---------------------------------------------------------------------------------------------- one label store
def _copy(atlas, tmp_path):
    import shutil

    shutil.copytree(atlas, tmp_path / "atlas", ignore=shutil.ignore_patterns("labels.parquet"))
    return tmp_path / "atlas"


def test_every_method_writes_one_store_that_the_explorer_shows(atlas, tmp_path):
    """SemanticLens labels (a concept file) and INVERT labels (the probe set) land in the atlas's one label store;
    the explorer's unit API lists both for a unit, its layer columns show the SemanticLens set, and recording the
    probe set again drops the labels made from it."""
    from starlette.testclient import TestClient

    from unitlens.atlas.labels import LabelStore
    from unitlens.explorer import Catalog, create_app

    copy = _copy(atlas, tmp_path)
    (tmp_path / "colours.txt").write_text("red\ngreen\nblue\n")
    lens = label_units(copy, concepts=str(tmp_path / "colours.txt"), backend="labeltest", layers=["presence"])
    inv = label_units(copy, method="invert", length=2, layers=["presence"])
    assert lens.path == inv.path == copy / "labels.parquet"
    assert "invert (probe set default)" in inv._repr_html_() and "red" in inv._repr_html_()
    sets = LabelStore(copy).sets().set_index("name")
    assert sorted(sets.index) == ["invert (probe set default)", "semanticlens (labeltest)"]
    assert sets.loc["invert (probe set default)", "score_name"] == "auc"
    stored = Atlas(copy).labels()
    for res in (lens, inv):
        mine = stored[stored["method"] == res.method].set_index("unit")["label"]
        assert mine.to_dict() == res.frame.set_index("unit")["label"].to_dict()
    assert inv.frame.set_index("unit").loc[RED, "label"] == "red" == lens.frame.set_index("unit").loc[RED, "label"]
    with TestClient(create_app(Catalog([copy]))) as client:
        page = client.get(f"/api/atlas/atlas/layer/presence/unit/{RED_NOT_GREEN}").json()
        by_method = {row["method"]: row for row in page["labels"]}
        assert set(by_method) == {"semanticlens", "invert"}
        assert by_method["invert"]["label"] == inv.frame.set_index("unit").loc[RED_NOT_GREEN, "label"]
        assert by_method["invert"]["score"] == 1.0 and by_method["invert"]["set"] == "invert (probe set default)"
        assert by_method["semanticlens"]["label"] == lens.frame.set_index("unit").loc[RED_NOT_GREEN, "label"]
        layer = client.get("/api/atlas/atlas/layer/presence").json()
        assert layer["label_set"] == "semanticlens (labeltest)"
        assert layer["columns"]["label"][:3] == ["red", "green", "blue"]
        overview = client.get("/api/atlas/atlas").json()
        assert {t["name"] for t in overview["label_sets"]} == set(sets.index)
    assert len(Atlas(copy).unit("presence", RED).labels) == 2
    spec = ProbeStore.open(copy).meta["spec"]
    record_probe(copy, spec, columns=["red", "green", "blue"], model=presence_model(), progress=False)
    assert set(Atlas(copy).labels()["method"]) == {"semanticlens"}  # the probe set's labels went with its images


def test_labels_of_older_atlases_are_read_until_labelled_again(atlas, tmp_path):
    """An atlas written before the one store kept lens labels in lens/<backend>/labels.parquet and probe labels in
    probe/<name>/labels/<method>.parquet: both are read as their label sets; labelling a set again replaces them."""
    import pandas as pd

    from unitlens.atlas.labels import LabelStore
    from unitlens.lens import LensStore

    copy = _copy(atlas, tmp_path)
    lens_dir = LensStore.open(copy, "labeltest").path
    pd.DataFrame({"layer": "presence", "unit": [0, 1], "label": ["red", "none"], "a": [0.3, 0.01],
                  "runner_up": ["blue", "red"], "a_runner_up": [0.1, 0.0], "threshold": 0.025,
                  "concepts": "old.txt"}).to_parquet(lens_dir / "labels.parquet")
    (copy / "probe" / "default" / "labels").mkdir()
    pd.DataFrame({"layer": "presence", "unit": [0, 1], "label": ["green", "blue"], "formula": ["", ""],
                  "score": [0.9, 0.8], "method": "invert"}).to_parquet(copy / "probe/default/labels/invert.parquet")
    old = LabelStore(copy).read()
    lens_rows = old[old["method"] == "semanticlens"].set_index("unit")
    assert list(lens_rows["label"]) == ["red", "none"] and list(lens_rows["score"]) == [0.3, 0.01]
    assert set(lens_rows["backend"]) == {"labeltest"} and lens_rows.loc[0, "runner_up_score"] == 0.1
    assert list(old[old["method"] == "invert"]["label"]) == ["green", "blue"]
    label_units(copy, method="invert", length=2, layers=["presence"])  # the set again: the new labels replace
    invert = Atlas(copy).labels(method="invert")
    assert len(invert) == 5 and invert.set_index("unit").loc[RED, "label"] == "red"
    assert len(Atlas(copy).labels(method="semanticlens")) == 2  # the other old set is still read


# ---------------------------------------------------------------------------------------------- CLI
def test_label_and_evaluate_commands(atlas):
    out = runner.invoke(lens_app, ["label", str(atlas), "--method", "invert", "--length", "2", "--layers", "presence"])
    assert out.exit_code == 0, out.output
    assert "red AND NOT green" in out.output or "NOT green AND red" in out.output
    stored = Atlas(atlas).labels(method="invert")
    assert set(stored["probe"]) == {"default"} and set(stored["layer"]) == {"presence"}
    assert "NOT green" in set(stored.loc[stored["unit"] == RED_NOT_GREEN, "label"].iloc[0].split(" AND "))
    out = runner.invoke(lens_app, ["evaluate-labels", str(atlas), "--backend", "labeltest", "--top-k", "6",
                                   "--layers", "presence", "--length", "2"])
    assert out.exit_code == 0, out.output
    for word in ("held-out probe images", "semanticlens", "clip-dissect", "invert", "random", "agreement",
                 "label_faithfulness.png"):
        assert word in out.output
    bad = runner.invoke(lens_app, ["label", str(atlas), "--method", "clip-dissect", "--backend", "labeltest-notext"])
    assert bad.exit_code == 2 and "text tower" in bad.output
    missing = runner.invoke(lens_app, ["evaluate-labels", str(atlas), "--probe", "other"])
    assert missing.exit_code == 2 and "no probe pass 'other'" in missing.output


def test_label_tables_have_the_documented_names(atlas):
    """JSON and CSV name the tables labels and counts whatever the method and title; --table prints one as CSV."""
    import io
    import json

    import pandas as pd

    args = ["label", str(atlas), "--method", "invert", "--length", "2", "--layers", "presence"]
    out = runner.invoke(lens_app, [*args, "--format", "json"])
    assert out.exit_code == 0, out.output
    tables = json.loads(out.stdout)
    assert list(tables) == ["labels", "counts"]
    labels = pd.read_csv(io.StringIO(runner.invoke(lens_app, [*args, "--format", "csv", "--table", "labels"]).stdout))
    assert labels["layer"].eq("presence").all() and len(labels) == len(tables["labels"]["rows"])


def test_a_busy_atlas_fails_before_any_labelling(atlas, monkeypatch):
    import json
    import socket
    import time

    import unitlens.probe.labelling
    from unitlens.errors import AtlasBusy

    class Never:
        def label(self, ctx, layers):
            raise AssertionError("labelled although the atlas is busy")

    monkeypatch.setattr(unitlens.probe.labelling, "labeller", lambda method, options=None, **params: Never())
    monkeypatch.setattr(unitlens.probe.faithfulness, "labeller", lambda method, options=None, **params: Never())
    lock = atlas / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "command": "probe", "started": time.time()}))
    try:
        with pytest.raises(AtlasBusy, match="'probe'"):
            label_units(atlas, method="invert")
        with pytest.raises(AtlasBusy, match="'probe'"):
            evaluate_labels(atlas)
    finally:
        lock.unlink()
