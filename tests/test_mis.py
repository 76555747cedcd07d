"""MIS: task layout, scores against hand-built embeddings and a literal loop, calibration, atlases end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from PIL import Image
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import unitlens.cli.common
import unitlens.cli.mis as mis_commands
import unitlens.cli.plot as plot_commands
from unitlens.backends.base import BACKENDS, Backend, PairwiseBackend
from unitlens.errors import BadInput, BiasWarning, TooFewExemplars, TooFewImages
from unitlens.mis import (
    MISOptions,
    build_tasks,
    fit_tau,
    noise_ceiling,
    score,
    score_embeddings,
    score_mis,
    summarize,
    task_layout,
)
from unitlens.mis.calibrate import pearson
from unitlens.mis.scoring import accuracy_from_margins, load_scores, mis_from_margins, score_gram
from unitlens.zoo import enumerate_units
from unitlens.zoo.factory import LoadedModel

from conftest import to_int_tensor, write_images

TAU = 0.16


def loop_mis(emb: np.ndarray | None, top: np.ndarray, bottom: np.ndarray, n: int, k: int, tau: float = TAU,
             f=None):
    """The paper's equations with plain loops: for every unit, task and explanation one similarity f(q, e) of two
    sample ids (default: the dot product of their rows of ``emb``)."""
    f = f or (lambda a, b: float(np.dot(emb[a], emb[b])))
    mis, acc = [], []
    for c in range(top.shape[0]):
        ps, solved = [], 0
        for i in range(n):
            e_pos = [top[c, i + j * n] for j in range(k)]
            e_neg = [bottom[c, i + j * n] for j in range(k)]
            q_pos, q_neg = top[c, n * k + i], bottom[c, n * k + i]

            def s(q, expl):
                return sum(f(q, e) for e in expl) / len(expl)

            d = (s(q_pos, e_pos) - s(q_pos, e_neg)) - (s(q_neg, e_pos) - s(q_neg, e_neg))
            ps.append(1 / (1 + math.exp(-d / tau)))
            solved += d > 0
        mis.append(sum(ps) / n)
        acc.append(solved / n)
    return np.array(mis), np.array(acc)


def concept_table(n_concepts=8, per=250, dim=16, noise=0.0, seed=0):
    """Images of colour-like concepts: one-hot(concept) plus Gaussian noise, L2-normalised. Ids grouped by concept."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_concepts), per)
    emb = np.zeros((len(labels), dim))
    emb[np.arange(len(labels)), labels] = 1.0
    emb += noise * rng.standard_normal(emb.shape)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return torch.tensor(emb, dtype=torch.float64), labels


def ids_of(labels, concept, count, rng):
    return rng.permutation(np.flatnonzero(labels == concept))[:count]


# ------------------------------------------------------------------------------------------ tasks

def test_task_layout_matches_hand_written_indices():
    top = torch.arange(100, 112)  # one unit, 12 exemplars, descending
    bottom = torch.arange(200, 212)
    t = build_tasks(top, bottom, n_tasks=3, k_expl=2)
    # pool = ranks 0..5; task i gets ranks i, i+3; queries are ranks 6, 7, 8; ranks 9.. are unused
    assert t.pos_expl.tolist() == [[[100, 103], [101, 104], [102, 105]]]
    assert t.neg_expl.tolist() == [[[200, 203], [201, 204], [202, 205]]]
    assert t.pos_query.tolist() == [[106, 107, 108]]
    assert t.neg_query.tolist() == [[206, 207, 208]]
    expl, query = task_layout(20, 9)
    assert expl[0].tolist() == list(range(0, 180, 20)) and expl[19].tolist() == list(range(19, 180, 20))
    assert query.tolist() == list(range(180, 200))
    # every pool rank is used exactly once
    assert sorted(expl.reshape(-1).tolist()) == list(range(180))


def test_tasks_for_many_units_at_once():
    g = torch.Generator().manual_seed(1)
    top = torch.randint(0, 10_000, (7, 30), generator=g)
    bottom = torch.randint(0, 10_000, (7, 30), generator=g)
    t = build_tasks(top, bottom, n_tasks=4, k_expl=5)
    assert t.pos_expl.shape == (7, 4, 5) and t.pos_query.shape == (7, 4)
    for c in range(7):
        for i in range(4):
            assert t.pos_expl[c, i].tolist() == [int(top[c, i + 4 * j]) for j in range(5)]
            assert t.neg_query[c, i] == bottom[c, 20 + i]


def test_too_few_exemplars_is_a_clear_error():
    top = torch.zeros(3, 150, dtype=torch.long)
    with pytest.raises(TooFewExemplars) as err:
        build_tasks(top, top, n_tasks=20, k_expl=9)
    msg = str(err.value)
    assert "200" in msg and "n_tasks" in msg and "15" in msg  # the minimum, the option, the largest N that fits
    build_tasks(top, top, n_tasks=15, k_expl=9)  # and lowering N works


# ------------------------------------------------------------------------------------------ scores

def test_clean_unit_beats_mixed_unit_beats_noise_unit():
    rng = np.random.default_rng(0)
    emb, labels = concept_table(noise=0.35, seed=0)
    n_noise = 300
    tops, bottoms, kinds = [], [], []
    tops.append(ids_of(labels, 0, 200, rng))
    bottoms.append(ids_of(labels, 1, 200, rng))
    kinds.append("clean")
    mixed = rng.permutation(np.concatenate([ids_of(labels, 2, 100, rng), ids_of(labels, 3, 100, rng)]))
    tops.append(mixed)
    bottoms.append(ids_of(labels, 4, 200, rng))
    kinds.append("mixed")
    for _ in range(n_noise):  # random ranking: exemplars drawn from all images regardless of concept
        pick = rng.permutation(len(labels))[:400]
        tops.append(pick[:200])
        bottoms.append(pick[200:])
        kinds.append("noise")
    res = score(emb, build_tasks(torch.tensor(np.stack(tops)), torch.tensor(np.stack(bottoms))), TAU)
    mis = res.mis.numpy()
    clean, mixed_mis, noise = mis[0], mis[1], mis[2:]
    assert clean > mixed_mis > noise.max()
    assert clean > 0.9 and mixed_mis > 0.6
    # noise units: MIS centred on 0.5 within 4 standard errors of their own spread
    se = noise.std(ddof=1) / math.sqrt(n_noise)
    assert abs(noise.mean() - 0.5) < 4 * se + 1e-3
    assert abs(res.accuracy.numpy()[2:].mean() - 0.5) < 0.03
    assert res.accuracy[0] == 1.0


def test_exact_values_without_noise():
    """With pure one-hot embeddings every similarity is 0 or 1, so each margin is known in closed form."""
    emb, labels = concept_table(noise=0.0)
    rng = np.random.default_rng(0)
    n, k = 20, 9
    clean_top, clean_bottom = ids_of(labels, 0, 200, rng), ids_of(labels, 1, 200, rng)
    # mixed: explanation columns j = 0, 2, 4, 6, 8 are concept 2, columns 1, 3, 5, 7 concept 3; queries concept 2
    a, c = iter(ids_of(labels, 2, 200, rng)), iter(ids_of(labels, 3, 200, rng))
    mixed_top = np.array([next(a) if (r >= n * k or (r // n) % 2 == 0) else next(c) for r in range(200)])
    res = score(emb, build_tasks(torch.tensor(np.stack([clean_top, mixed_top])),
                                 torch.tensor(np.stack([clean_bottom, clean_bottom]))), TAU)
    # clean: s(q+,E+) = 1, s(q+,E-) = 0, s(q-,E+) = 0, s(q-,E-) = 1 -> margin 2
    # mixed: s(q+,E+) = 5/9, s(q+,E-) = 0, s(q-,E+) = 0, s(q-,E-) = 1 -> margin 1 + 5/9
    np.testing.assert_allclose(res.margin.numpy(), np.array([[2.0] * n, [1 + 5 / 9] * n]), atol=1e-12)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(res.mis.numpy(), [sig(2 / TAU), sig((1 + 5 / 9) / TAU)], atol=1e-12)
    np.testing.assert_array_equal(res.accuracy.numpy(), [1.0, 1.0])


@pytest.mark.parametrize("method", ["gather", "gram"])
def test_vectorised_equals_the_literal_loop(method):
    g = torch.Generator().manual_seed(3)
    emb = torch.nn.functional.normalize(torch.randn(500, 24, generator=g), dim=1)
    top = torch.randint(0, 500, (40, 60), generator=g)
    bottom = torch.randint(0, 500, (40, 60), generator=g)
    n, k = 6, 8
    expected_mis, expected_acc = loop_mis(emb.double().numpy(), top.numpy(), bottom.numpy(), n, k)
    tasks = build_tasks(top, bottom, n, k)
    res64 = score(emb.double(), tasks, TAU, method=method, chunk_units=7)
    np.testing.assert_allclose(res64.mis.numpy(), expected_mis, atol=1e-12)
    np.testing.assert_array_equal(res64.accuracy.numpy(), expected_acc)
    res32 = score(emb, tasks, TAU, method=method)
    np.testing.assert_allclose(res32.mis.double().numpy(), expected_mis, atol=1e-6)
    # sample ids that are not row numbers: map through table_ids
    ids = torch.arange(500) * 7 + 3
    mapped = score(emb.double(), tasks.map(lambda t: t * 7 + 3), TAU, table_ids=ids, method=method)
    np.testing.assert_allclose(mapped.mis.numpy(), expected_mis, atol=1e-12)
    with pytest.raises(KeyError):
        score(emb, tasks.map(lambda t: t * 7 + 4), TAU, table_ids=ids, method=method)


def test_accuracy_variant_and_tau():
    margin = torch.tensor([[0.1, -0.2, 0.3, 0.0], [1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(accuracy_from_margins(margin).numpy(), [0.5, 1.0])  # a tie is not solved
    expected = [np.mean([1 / (1 + math.exp(-m / 0.05)) for m in row]) for row in margin.tolist()]
    np.testing.assert_allclose(mis_from_margins(margin, 0.05).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError):
        mis_from_margins(margin, 0.0)
    # a smaller tau pushes the MIS of a solvable unit towards its accuracy
    emb, labels = concept_table(noise=0.6, seed=4)
    rng = np.random.default_rng(4)
    tasks = build_tasks(torch.tensor(ids_of(labels, 0, 200, rng))[None],
                        torch.tensor(ids_of(labels, 1, 200, rng))[None])
    res = score(emb, tasks, TAU)
    sharp = mis_from_margins(res.margin, 1e-4)
    assert abs(float(sharp[0]) - float(res.accuracy[0])) < 1e-6
    assert 0.5 < float(res.mis[0]) < float(sharp[0]) + 1e-9


def test_explanations_given_as_embeddings_and_gradients():
    g = torch.Generator().manual_seed(5)
    emb = torch.nn.functional.normalize(torch.randn(30, 5, generator=g, dtype=torch.float64), dim=1)
    top = torch.randint(0, 30, (3, 12), generator=g)
    bottom = torch.randint(0, 30, (3, 12), generator=g)
    tasks = build_tasks(top, bottom, n_tasks=3, k_expl=3)
    ref = score(emb, tasks)
    direct = score_embeddings(emb[tasks.pos_expl], emb[tasks.neg_expl], emb[tasks.pos_query], emb[tasks.neg_query])
    np.testing.assert_allclose(direct.mis.numpy(), ref.mis.numpy(), atol=1e-12)
    # one explanation set shared by all tasks of a unit (e.g. feature visualisations) = the same set repeated
    shared_pos, shared_neg = emb[top[:, :4]], emb[bottom[:, :4]]  # (C, K, D)
    shared = score_embeddings(shared_pos, shared_neg, emb[tasks.pos_query], emb[tasks.neg_query])
    repeated = score_embeddings(shared_pos[:, None].expand(-1, 3, -1, -1), shared_neg[:, None].expand(-1, 3, -1, -1),
                                emb[tasks.pos_query], emb[tasks.neg_query])
    np.testing.assert_allclose(shared.mis.numpy(), repeated.mis.numpy(), atol=1e-12)
    # differentiable in the embedding table (gather and gram paths) and in direct embeddings
    for method in ("gather", "gram"):
        assert torch.autograd.gradcheck(lambda t, method=method: score(t, tasks, method=method).mis,
                                        (emb.clone().requires_grad_(True),), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: score_gram(t @ t.T, tasks).mis, (emb.clone().requires_grad_(True),),
                                    fast_mode=True)
    fv = shared_pos.clone().requires_grad_(True)
    score_embeddings(fv, shared_neg, emb[tasks.pos_query], emb[tasks.neg_query], normalize=True).mis.sum().backward()
    assert fv.grad is not None and torch.isfinite(fv.grad).all() and fv.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ calibration

def _synthetic_margins(units=2000, n=20, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-0.05, 0.35, units)[:, None]
    return centre + 0.1 * rng.standard_normal((units, n))


def test_fit_tau_recovers_the_temperature_that_made_the_scores():
    margins = _synthetic_margins()
    true_tau = 0.11
    human = mis_from_margins(torch.tensor(margins), true_tau).numpy()
    fit = fit_tau(margins, human, fraction=0.05, seed=1)
    assert fit.n_fit == 100 and fit.n_eval == 1900
    assert abs(fit.tau - true_tau) / true_tau < 1e-4
    assert fit.pearson > 0.9999 and fit.spearman > 0.9999
    # noisy human scores (30 Bernoulli decisions per unit): tau still close, correlations below 1
    rng = np.random.default_rng(2)
    noisy = rng.binomial(30, human) / 30
    index = pd.MultiIndex.from_arrays([["layer"] * len(human), np.arange(len(human))], names=["layer", "unit"])
    frame = pd.DataFrame(margins, index=index)
    table = pd.DataFrame({"layer": "layer", "unit": np.arange(len(human)), "score": noisy})
    fit = fit_tau(frame, table.sample(frac=1.0, random_state=0), fraction=0.05, seed=3)  # keyed, shuffled rows
    assert abs(fit.tau - true_tau) / true_tau < 0.3
    assert 0.5 < fit.pearson < 0.99
    # a different temperature really gives a different fit
    other = fit_tau(margins, mis_from_margins(torch.tensor(margins), 0.5).numpy(), fraction=0.05, seed=1)
    assert abs(other.tau - 0.5) / 0.5 < 1e-4


def test_noise_ceiling_rises_with_the_number_of_trials():
    rng = np.random.default_rng(0)
    rates = rng.uniform(0.5, 1.0, 400)
    many = noise_ceiling(rates, n_trials=100_000, n_sim=200, seed=1)
    few = noise_ceiling(rates, n_trials=5, n_sim=200, seed=1)
    assert many.pearson_mean > 0.995 and many.spearman_mean > 0.99
    assert few.pearson_mean < 0.8 and few.pearson_mean < many.pearson_mean
    # independent expectation: corr(h, h + e) with var(e) = h(1 - h)/n is sd(h) / sqrt(var(h) + E[h(1 - h)]/n)
    for trials, ceiling in ((5, few), (30, noise_ceiling(rates, 30, n_sim=200, seed=1))):
        expected = rates.std() / math.sqrt(rates.var() + (rates * (1 - rates)).mean() / trials)
        assert abs(ceiling.pearson_mean - expected) < 0.03
        assert ceiling.pearson_std > 0
    # per-unit trial counts from a table column
    table = pd.DataFrame({"score": rates, "n_trials": np.where(np.arange(400) < 200, 5, 100_000)})
    mixed = noise_ceiling(table, "n_trials", n_sim=100, seed=1)
    assert few.pearson_mean < mixed.pearson_mean < many.pearson_mean
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ atlases

COLOURS = {"red": (200, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 200), "gray": (110, 110, 110)}


class ColourNet(nn.Module):
    """Units with known behaviour on flat colour images plus pixel noise.

    colour (1x1 conv): 0 = red − green (clean: top red, bottom green), 1 = constant 0,
    2 = red + green − 2·blue (mixed: top red *or* green, bottom blue).
    texture (8x8 conv, zero-sum kernels): responds only to pixel noise (random ranking).
    ratio: red / green, infinite on images with no green (non-finite unit).
    """

    def __init__(self):
        super().__init__()
        self.colour = nn.Conv2d(3, 3, 1, bias=False)
        self.texture = nn.Conv2d(3, 2, 8, bias=False)
        self.ratio = Ratio()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            w = torch.tensor([[1.0, -1, 0], [0, 0, 0], [1, 1, -2]])
            self.colour.weight.copy_(w.view(3, 3, 1, 1))
            k = torch.randn(2, 3, 8, 8, generator=g)
            self.texture.weight.copy_(k - k.mean((2, 3), keepdim=True))  # constant colour cancels exactly

    def forward(self, x):
        return torch.cat([self.colour(x).mean((2, 3)), self.texture(x).flatten(1), self.ratio(x).mean((2, 3))], 1)


class Ratio(nn.Module):
    def forward(self, x):
        return x[:, :1] / x[:, 1:2]


class ColourBackend(Backend):
    """Embedding = centred mean colour, normalised: similar colours have cosine near 1."""

    name = "colourtest"
    dim = 3

    def __init__(self, device=None):
        super().__init__("cpu")

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self._finish(batch.mean((2, 3)) - 110.0)


BACKENDS.register("colourtest", lambda spec, device=None, **kw: ColourBackend(device))


@pytest.fixture(scope="module")
def colour_atlas(tmp_path_factory):
    from unitlens.recording import record

    root = tmp_path_factory.mktemp("mis")
    rng = np.random.default_rng(0)
    arrays, classes = [], []
    for name, rgb in COLOURS.items():
        for i in range(40):
            img = np.clip(np.array(rgb)[None, None] + rng.normal(0, 12, (8, 8, 3)), 0, 255).astype(np.uint8)
            if name == "red" and i < 3:
                img[..., 1] = 0  # no green at all: the ratio unit divides by zero
            arrays.append(img)
            classes.append(name)
    write_images(root / "images", arrays, classes)
    loaded = LoadedModel(name="colournet", model=ColourNet().eval(), transform=to_int_tensor, weights="hand-built",
                         input_size=(3, 8, 8))
    layers = enumerate_units(loaded.model, skip_first_last=False, include=["colour", "texture", "ratio"])
    with pytest.warns(UserWarning, match=r"NaN or inf activations in 1 unit\(s\) of layer\(s\) ratio"):
        result = record(loaded, str(root / "images"), root / "atlas", layers, k=30, batch_size=16, progress=False,
                        num_workers=0)
    return result.atlas, np.array(classes)


def test_score_mis_end_to_end(colour_atlas):
    atlas, classes = colour_atlas
    run = score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, tau=TAU, progress=False)
    frame = run.frame.set_index(["layer", "unit"])
    assert run.counts == {"units": 6, "scored": 4, "constant": 1, "nonfinite": 1}
    assert frame.loc[("colour", 1), "status"] == "constant" and np.isnan(frame.loc[("colour", 1), "mis"])
    assert frame.loc[("ratio", 0), "status"] == "nonfinite" and np.isnan(frame.loc[("ratio", 0), "mis"])
    assert run.cache_misses == run.n_images and run.cache_hits == 0
    clean, mixed = frame.loc[("colour", 0), "mis"], frame.loc[("colour", 2), "mis"]
    noise = frame.loc[("texture", [0, 1]), "mis"].to_numpy()
    assert clean > mixed > noise.max() and clean > 0.9
    assert abs(noise.mean() - 0.5) < 0.15
    # the same numbers from the literal loop over the recorded exemplars and the backend's embeddings
    backend = ColourBackend()
    ds = atlas.dataset()
    emb = torch.cat([backend.encode_images(backend.preprocess(ds.image(i))[None]) for i in range(len(ds))])
    for layer, units in (("colour", [0, 2]), ("texture", [0, 1])):
        ex = atlas.exemplars(layer)
        mis, acc = loop_mis(emb.double().numpy(), ex.top_ids[units].numpy(), ex.bottom_ids[units].numpy(), 5, 4)
        np.testing.assert_allclose(frame.loc[[(layer, u) for u in units], "mis"], mis, atol=1e-6)
        np.testing.assert_allclose(frame.loc[[(layer, u) for u in units], "mis_accuracy"], acc, atol=1e-6)
    # written to scores.parquet with backend and params; excluded units have missing values
    stored = atlas.scores()
    assert set(stored["metric"]) == {"mis", "mis_accuracy"} and set(stored["backend"]) == {"colourtest"}
    assert len(stored) == 2 * 6 and stored["value"].isna().sum() == 2 * 2
    assert set(map(tuple, stored.loc[stored["value"].isna(), ["layer", "unit"]].to_numpy())) == {("colour", 1),
                                                                                                ("ratio", 0)}
    params = json.loads(stored["params"].iloc[0])
    assert {k: params[k] for k in ("n_tasks", "k", "tau")} == {"n_tasks": 5, "k": 4, "tau": TAU}
    # every option is stored with the scores and reads back as the options the run had
    assert MISOptions.from_mapping(params["options"]) == run.options == MISOptions(backend="colourtest", n_tasks=5,
                                                                                    k_expl=4, tau=TAU)
    shown = run._repr_html_()  # a notebook shows the run: its tasks, counts and the per-layer table
    assert "N = 5, K = 4" in shown and "colourtest" in shown and "<td>texture</td>" in shown
    pd.testing.assert_frame_equal(load_scores(atlas).drop(columns="n_tasks"), run.frame.drop(columns="n_tasks"),
                                  check_dtype=False)
    # a second run is served from the embedding cache, and the summary tables aggregate scored units only
    again = score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, layers=["col*"], progress=False,
                      write=False).frame
    assert list(again["layer"].unique()) == ["colour"]
    tables = summarize(run.frame, model="colournet")
    by_layer = tables["layer"].set_index("layer")
    assert by_layer.loc["colour", "scored"] == 2 and by_layer.loc["colour", "constant"] == 1
    assert by_layer.loc["ratio", "nonfinite"] == 1 and np.isnan(by_layer.loc["ratio", "mis_mean"])
    scored = run.frame.loc[run.frame["status"] == "scored", "mis"]
    model = tables["model"].iloc[0]
    assert model["mis_mean"] == pytest.approx(scored.mean())
    assert model["mis_p5"] == pytest.approx(np.quantile(scored, 0.05))
    assert model["mis_p95"] == pytest.approx(np.quantile(scored, 0.95))
    assert set(tables["type"]["type"]) == {"Conv", "Other"}
    with pytest.raises(TooFewExemplars, match="n_tasks"):
        score_mis(atlas, backend="colourtest", n_tasks=20, k_expl=9, progress=False, write=False)
    # re-scoring some layers (here with another tau) keeps the other layers' stored scores
    score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, tau=0.3, layers=["texture"], progress=False)
    merged = load_scores(atlas).set_index(["layer", "unit"])
    assert merged.loc["colour", "tau"].eq(TAU).all() and merged.loc["texture", "tau"].eq(0.3).all()
    assert merged.loc[("colour", 0), "mis"] == pytest.approx(clean)
    assert merged.loc[("ratio", 0), "status"] == "nonfinite"


def test_commands_route_to_score_and_plot(colour_atlas, tmp_path, monkeypatch):
    atlas, _ = colour_atlas
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))
    app = typer.Typer()
    app.add_typer(mis_commands.app, name="mis")
    plot = typer.Typer()
    plot.command("mis")(plot_commands.mis)
    app.add_typer(plot, name="plot")
    runner = CliRunner()
    args = [str(atlas.path), "--backend", "colourtest", "--n-tasks", "5", "--k-expl", "4"]
    short = runner.invoke(app, ["mis", *args])
    assert short.exit_code == 0, short.output
    assert "scored" in short.output and "constant" in short.output and "by layer type" in short.output
    assert "ratio" in short.output  # the non-finite unit is listed
    explicit = runner.invoke(app, ["mis", "score", *args])
    assert explicit.exit_code == 0 and "cache hits" in explicit.output
    bad = runner.invoke(app, ["mis", str(atlas.path), "--backend", "colourtest"])
    assert bad.exit_code == 2 and "n_tasks" in bad.output
    out = runner.invoke(app, ["plot", "mis", str(atlas.path), "--out", str(tmp_path / "plots")])
    assert out.exit_code == 0, out.output
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["mis_by_layer.png", "mis_hist.png", "mis_vs_rel_depth.png", "mis_vs_rel_width.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # calibrate: human scores made from the atlas's own margins at a known tau
    run = score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, progress=False, write=False, keep_margins=True)
    human = pd.DataFrame({"layer": ["colour", "colour", "texture", "texture"], "unit": [0, 2, 0, 1]})
    from unitlens.mis.scoring import margins_frame

    m = margins_frame(run).loc[list(zip(human["layer"], human["unit"]))]
    human["score"] = mis_from_margins(torch.tensor(m.to_numpy()), 0.3).numpy()
    human["n_trials"] = 30
    human.to_csv(tmp_path / "human.csv", index=False)
    cal = runner.invoke(app, ["mis", "calibrate", str(atlas.path), "--human", str(tmp_path / "human.csv"),
                              "--backend", "colourtest", "--n-tasks", "5", "--k-expl", "4", "--fraction", "1"])
    assert cal.exit_code == 0, cal.output
    assert "--tau 0.3" in cal.output and "noise ceiling" in cal.output


# ------------------------------------------------------------------------------------------ small datasets

def _colour_atlas(root, n_images: int, k: int = 30):
    """A ColourNet atlas of ``n_images`` noisy flat-colour images recorded with ``k`` exemplars per side."""
    from unitlens.recording import record

    rng = np.random.default_rng(1)
    names = list(COLOURS)
    arrays = [np.clip(np.array(COLOURS[names[i % 4]])[None, None] + rng.normal(0, 12, (8, 8, 3)), 1, 255)
              .astype(np.uint8) for i in range(n_images)]
    write_images(root / "images", arrays, [names[i % 4] for i in range(n_images)])
    loaded = LoadedModel(name="colournet", model=ColourNet().eval(), transform=to_int_tensor, weights="hand-built",
                         input_size=(3, 8, 8))
    layers = enumerate_units(loaded.model, skip_first_last=False, include=["colour", "texture"])
    return record(loaded, str(root / "images"), root / "atlas", layers, k=k, batch_size=16, progress=False,
                  num_workers=0).atlas


def test_a_dataset_too_small_for_disjoint_exemplars_is_refused_or_scored_with_its_overlap(tmp_path):
    atlas = _colour_atlas(tmp_path, 40)  # N=5, K=4: 25 exemplars per side, 50 images needed, 40 there
    with pytest.raises(TooFewImages) as err:
        score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, progress=False, write=False)
    msg = str(err.value)
    assert "40 readable images" in msg and "2·N·(K+1) = 50" in msg and "dataset" in msg
    assert "--n-tasks 4" in msg and "--k-expl 3" in msg and "--allow-overlap" in msg  # 2·4·5 = 40, 2·5·4 = 40
    assert "--k " not in msg  # recording with a larger k cannot help
    # the suggested settings fit: scored without overlap
    assert score_mis(atlas, backend="colourtest", n_tasks=4, k_expl=4, progress=False, write=False).overlap == 0
    with pytest.warns(BiasWarning, match="share 10 images"):
        run = score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, progress=False, allow_overlap=True)
    # the overlap it reports is the number of images in both exemplar sets of every scored unit (brute force)
    scored = run.frame[run.frame["status"] == "scored"]
    shared = set()
    for layer, unit in zip(scored["layer"], scored["unit"]):
        ex = atlas.exemplars(layer)
        shared.add(len(set(ex.top_ids[unit, :25].tolist()) & set(ex.bottom_ids[unit, :25].tolist())))
    assert shared == {run.overlap} == {10}
    stored = atlas.scores()
    assert {json.loads(p)["overlap"] for p in stored["params"]} == {10}


def test_a_tiny_dataset_blames_the_dataset_not_k(tmp_path):
    atlas = _colour_atlas(tmp_path, 3)  # recorded with k=30, so every unit keeps all 3 images
    assert atlas.exemplars("colour").k == 3
    for allow in (False, True):
        with pytest.raises(TooFewImages) as err:
            score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, progress=False, write=False,
                      allow_overlap=allow)
        msg = str(err.value)
        assert "only 3 readable images" in msg and "recorded with --k 30" in msg and "at least 50 images" in msg
        assert "--k 25" not in msg and "--n-tasks" not in msg  # nothing fits 3 images


def test_mis_tables_keep_mis_at_80_columns_and_print_one_as_plain_csv(colour_atlas, monkeypatch):
    """Long layer names (here the colour atlas's, lengthened) wrap at 80 columns; MIS mean, p5 and p95 stay. With
    --format csv --table by_layer the output is one CSV file that pandas reads as it is."""
    import io

    import unitlens.mis.scoring

    atlas, _ = colour_atlas
    run = score_mis(atlas, backend="colourtest", n_tasks=5, k_expl=4, progress=False, write=False)
    long = {name: f"encoder.stages.{i}.blocks.{i + 10}.attention_output_projection.{name}"
            for i, name in enumerate(run.frame["layer"].unique())}
    run.frame["layer"] = run.frame["layer"].map(long)
    monkeypatch.setattr(unitlens.mis.scoring, "score_mis", lambda *args, **kwargs: run)
    out = io.StringIO()
    monkeypatch.setattr(unitlens.cli.common, "console", Console(file=out, width=80, soft_wrap=True))
    app = typer.Typer()
    app.add_typer(mis_commands.app, name="mis")
    runner = CliRunner()
    shown = runner.invoke(app, ["mis", str(atlas.path), "--backend", "colourtest", "--no-write"])
    assert shown.exit_code == 0, shown.output
    text = out.getvalue()
    by_layer = text.split("by layer\n")[1].split("by layer type")[0]
    header = " ".join(line for line in by_layer.splitlines() if line.startswith("┃"))
    assert all(word in header for word in ("MIS", "mean", "p5", "p95")), by_layer
    assert all(len(line) <= 80 for line in text.splitlines())
    assert not any(k in note for note in shown.stderr.split("note:") if "do not fit" in note
                   for k in ("MIS mean", "MIS p5", "MIS p95"))
    flat = "".join(line.split("│")[1].strip() for line in by_layer.splitlines() if line.startswith("│"))
    assert all(name in flat for name in long.values())  # wrapped, whole when its lines are joined
    plain = runner.invoke(app, ["mis", str(atlas.path), "--backend", "colourtest", "--no-write", "--format", "csv",
                                "--table", "by_layer"])
    assert plain.exit_code == 0, plain.output
    table = pd.read_csv(io.StringIO(plain.stdout))
    expected = run.summary()["layer"]
    assert table["layer"].tolist() == expected["layer"].tolist()
    np.testing.assert_allclose(table["mis_mean"], expected["mis_mean"])


def test_mis_command_refuses_small_datasets_and_shows_the_overlap(tmp_path, monkeypatch):
    atlas = _colour_atlas(tmp_path, 40)
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))
    app = typer.Typer()
    app.add_typer(mis_commands.app, name="mis")
    runner = CliRunner()
    args = ["mis", str(atlas.path), "--backend", "colourtest", "--n-tasks", "5", "--k-expl", "4"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "40 readable images" in refused.output and "--k " not in refused.output
    scored = runner.invoke(app, [*args, "--allow-overlap"])
    assert scored.exit_code == 0, scored.output
    assert "top/bottom overlap (of 25)" in scored.output and "share 10 images" in scored.output
    assert "overlap 10 of 25: biased" in scored.output
    fine = runner.invoke(app, ["mis", str(atlas.path), "--backend", "colourtest", "--n-tasks", "4", "--k-expl", "4"])
    assert fine.exit_code == 0 and "share" not in fine.output and "biased" not in fine.output


# ------------------------------------------------------------------------------------------ pairwise backends

class ColourDistance(PairwiseBackend):
    """f = minus the Euclidean distance of mean colours: defined on pairs, not a dot product of embeddings."""

    name = "colourpairs"
    chunk = 7  # chunks that do not divide the blocks

    def __init__(self, device=None):
        super().__init__("cpu")

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float64).copy()).permute(2, 0, 1)

    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return [batch.mean((2, 3))]

    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        return -torch.cdist(fa[0], fb[0]).float()


def test_mis_with_a_pairwise_backend_equals_the_loop_and_keeps_its_matrix(tmp_path):
    """MIS with a pairwise f is the paper's formula with f(q, e) computed pair by pair; a second run reads the
    matrix back and compares no pair."""
    atlas = _colour_atlas(tmp_path, 60)
    backend = ColourDistance()
    run = score_mis(atlas, backend=backend, n_tasks=5, k_expl=4, progress=False, write=False)
    n = run.n_images
    assert run.pairs == n * (n + 1) // 2 and run.cache_misses == n and run.cache_hits == 0
    ds = atlas.dataset()
    colour = {i: backend.preprocess(ds.image(i)).mean((1, 2)) for i in range(len(ds))}

    def f(a, b):
        return -float(torch.dist(colour[int(a)], colour[int(b)]))

    frame = run.frame.set_index(["layer", "unit"])
    for layer, units in (("colour", [0, 2]), ("texture", [0, 1])):
        ex = atlas.exemplars(layer)
        mis, acc = loop_mis(None, ex.top_ids[units].numpy(), ex.bottom_ids[units].numpy(), 5, 4, f=f)
        np.testing.assert_allclose(frame.loc[[(layer, u) for u in units], "mis"], mis, atol=1e-5)
        np.testing.assert_allclose(frame.loc[[(layer, u) for u in units], "mis_accuracy"], acc)
    assert frame.loc[("colour", 0), "mis"] > 0.9  # the clean colour unit is easy for a colour distance too
    again = score_mis(atlas, backend=backend, n_tasks=5, k_expl=4, progress=False, write=False)
    assert again.pairs == 0 and again.cache_hits == n
    pd.testing.assert_frame_equal(again.frame, run.frame)


def test_pairwise_backends_in_the_cli_and_where_only_embeddings_work(tmp_path, monkeypatch):
    from unitlens.backends import NotEmbeddable
    from unitlens.lens import embed_units

    BACKENDS.register("colourpairs", lambda spec, device=None, **kw: ColourDistance(device))
    atlas = _colour_atlas(tmp_path, 60)
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))
    app = typer.Typer()
    app.add_typer(mis_commands.app, name="mis")
    out = CliRunner().invoke(app, ["mis", str(atlas.path), "--backend", "colourpairs", "--n-tasks", "5",
                                   "--k-expl", "4", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert "pairs compared" in out.output and "newly embedded" not in out.output
    with pytest.raises(NotEmbeddable, match=r"the lens .*offline-vl.*unitlens mis ATLAS --backend colourpairs"):
        embed_units(atlas, ColourDistance(), progress=False)
    assert not atlas.derived_path("lens").exists()  # refused before a store was made


def test_pairwise_matrix_in_blocks_resumes_and_checks_its_images(tmp_path, monkeypatch):
    from unitlens.backends import PairwiseMatrix
    from unitlens.backends import pairwise as pairwise_module
    from unitlens.errors import AtlasError

    atlas = _colour_atlas(tmp_path, 60)
    backend = ColourDistance()
    ids = list(range(0, 60, 2))[::-1]  # any order
    ds = atlas.dataset()
    x = torch.stack([backend.preprocess(ds.image(i)) for i in ids])
    expected = backend.compare(backend.features(x), backend.features(x))
    one_image = 3 * 8  # bytes of one image's features (3 float64)
    matrix = PairwiseMatrix(atlas, backend, memory=8 * one_image)  # blocks of 8 rows: 8, 8, 8, 6
    got = matrix.get(ids, progress=False)
    assert torch.equal(got, expected) and matrix.pairs == 30 * 31 // 2
    folder = next(p for p in atlas.backend_path("pairwise", backend.name).iterdir())
    blocks = sorted(p.name for p in folder.glob("rows-*"))
    assert blocks == ["rows-000000.safetensors", "rows-000008.safetensors", "rows-000016.safetensors",
                      "rows-000024.safetensors"]
    assert pairwise_module.forwards(30, 8) == 30 + 22 + 14 + 6
    # a run stopped after its first blocks: the next one computes the missing block only (8 rows over 14 columns)
    (folder / blocks[2]).unlink()
    resumed = PairwiseMatrix(atlas, backend, memory=10**9)  # the stored block size wins over a new budget
    assert torch.equal(resumed.get(ids, progress=False), expected)
    assert resumed.pairs == 8 * 9 // 2 + 8 * 6 and resumed.stored == 22
    # a damaged block is computed again
    (folder / blocks[0]).write_bytes(b"broken")
    assert torch.equal(PairwiseMatrix(atlas, backend).get(ids, progress=False), expected)
    # an image changed after recording: refused before any pair is compared
    (folder / blocks[1]).unlink()
    changed = ds.path(ids[3])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(changed)
    with pytest.raises(AtlasError, match="changed"):
        PairwiseMatrix(atlas, backend).get(ids, progress=False)
    # too many images for one matrix: refused with its cost and the ways out
    monkeypatch.setattr(pairwise_module, "MAX_IMAGES", 20)
    with pytest.raises(BadInput, match=r"465 image pairs.*--layers.*embedding backend"):
        PairwiseMatrix(atlas, backend).get(ids, progress=False)


def test_mis_with_dists_equals_the_score_of_its_similarity_matrix(tmp_path):
    """End to end with the real DISTS architecture (random weights): the stored matrix is DISTS of every pair."""
    from unitlens.backends import load_backend

    atlas = _colour_atlas(tmp_path, 16, k=8)
    backend = load_backend("dists+random", device="cpu", size=32)
    run = score_mis(atlas, backend=backend, n_tasks=2, k_expl=2, progress=False, write=True)
    assert atlas.scores()["backend"].eq("dists+random").all() and run.counts["scored"] == 4
    ds = atlas.dataset()
    x = torch.stack([backend.preprocess(ds.image(i)) for i in range(len(ds))])
    sim = backend.similarity(x, x)
    frame = run.frame.set_index(["layer", "unit"])
    for layer in ("colour", "texture"):
        ex = atlas.exemplars(layer)
        units = [u for u in range(ex.top_ids.shape[0]) if frame.loc[(layer, u), "status"] == "scored"]
        tasks = build_tasks(ex.top_ids[units], ex.bottom_ids[units], 2, 2)
        np.testing.assert_allclose(frame.loc[[(layer, u) for u in units], "mis"],
                                   score_gram(sim.double(), tasks).mis.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------------ the CPU kernels

@pytest.mark.parametrize("method", ["gather", "gram"])
def test_cpu_jobs_equal_the_loop_for_any_threads_blocks_and_chunks(method):
    """Column blocks (D > 128, a partial last block), chunks and worker counts change nothing: float64 equals the
    loop to 1e-12, and float32 results are bit-identical across thread counts and chunkings."""
    from unitlens.mis.similarities import COLUMNS

    g = torch.Generator().manual_seed(7)
    dim = 2 * COLUMNS + 44
    emb = torch.nn.functional.normalize(torch.randn(300, dim, generator=g, dtype=torch.float64), dim=1)
    top = torch.randint(0, 300, (23, 40), generator=g)
    bottom = torch.randint(0, 300, (23, 40), generator=g)
    n, k = 4, 7
    expected_mis, expected_acc = loop_mis(emb.numpy(), top.numpy(), bottom.numpy(), n, k)
    tasks = build_tasks(top, bottom, n, k)
    for chunk in (None, 2, 5):
        margins = []
        for threads in (1, 3):
            res = score(emb, tasks, TAU, method=method, threads=threads, chunk_units=chunk, device="cpu")
            np.testing.assert_allclose(res.mis.numpy(), expected_mis, atol=1e-12)
            np.testing.assert_array_equal(res.accuracy.numpy(), expected_acc)
            res32 = score(emb.float(), tasks, TAU, method=method, threads=threads, chunk_units=chunk, device="cpu")
            np.testing.assert_allclose(res32.mis.double().numpy(), expected_mis, atol=1e-6)
            margins.append(res32.margin)
        assert torch.equal(margins[0], margins[1])  # the same jobs on 1 or 3 workers: bit-identical


def test_run_jobs_runs_every_job_raises_their_errors_and_restores_the_threads():
    from unitlens.runtime import run_jobs

    before = torch.get_num_threads()
    seen, inside = [], set()

    def job(i):
        inside.add(torch.get_num_threads())
        seen.append(i)

    run_jobs(range(50), job, threads=3)
    assert sorted(seen) == list(range(50)) and inside == {1} and torch.get_num_threads() == before

    def bad(i):
        if i == 7:
            raise ValueError("job 7")

    with pytest.raises(ValueError, match="job 7"):
        run_jobs(range(20), bad, threads=2)
    assert torch.get_num_threads() == before


def test_tied_task_exemplars_are_counted_and_reported(colour_atlas, tmp_path, monkeypatch):
    """A ReLU unit that is 0 on every non-red image: all 30 bottom exemplars tie at 0 (of the other colours), so the
    atlas counts them and the MIS output says how many scored units the seeded tie-break decided."""
    from unitlens.recording import record

    class Rectified(nn.Module):
        def __init__(self):
            super().__init__()
            self.unit = nn.Conv2d(3, 1, 1)
            with torch.no_grad():
                self.unit.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))
                self.unit.bias.fill_(0.0)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.unit(x))

    atlas, classes = colour_atlas
    loaded = LoadedModel(name="rectified", model=Rectified().eval(), transform=to_int_tensor, weights="hand-built",
                         input_size=(3, 8, 8))
    images = atlas.manifest.dataset.spec
    out = record(loaded, images, tmp_path / "atlas", ["act"], k=30, progress=False, num_workers=0).atlas
    units = out.units()
    zeros = int(sum(c != "red" for c in classes))  # the other colours: red − green <= 0 everywhere
    assert units["bottom_tied"].tolist() == [30] and units["top_tied"].tolist() == [0] and zeros > 30
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))
    app = typer.Typer()
    app.add_typer(mis_commands.app, name="mis")
    res = CliRunner().invoke(app, ["mis", str(out.path), "--backend", "colourtest", "--n-tasks", "5", "--k-expl", "4",
                                   "--no-write"])
    assert res.exit_code == 0, res.output
    assert "1 of 1 scored units have task exemplars tied at one activation value, 1 of them all 25" in res.output
