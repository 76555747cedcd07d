"""Studies: parsing and expansion of study files, bad input before any work, the runner (resume, failure
isolation, shared record passes and embeddings, Ray), the study table against each atlas, and the DuckDB views."""
from __future__ import annotations

import json
import math
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import unitlens.cli.common
import unitlens.data.datasets
from unitlens.atlas import Atlas
from unitlens.backends import load_backend
from unitlens.backends.cache import EmbeddingCache
from unitlens.cli import app
from unitlens.errors import BadInput, MissingFile
from unitlens.study import Study, load_spec, run_study
from unitlens.study.spec import natural_key, parse_spec
from unitlens.zoo import load_model

from conftest import write_images
from test_record import assert_same_atlas

RESNET = "timm:test_resnet?num_classes=3&input_size=32"
EFFNET = "timm:test_efficientnet?num_classes=3&input_size=32"
BACKEND = "timm:test_resnet+random"  # real embeddings from a tiny seeded architecture, loadable in any process
TIMINGS = ["record_s", "accuracy_s", "mis_s", "lens_s"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """24 random 12x12 images in class folders 0, 1, 2 (the folder is also a labelled set for accuracy)."""
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp("data") / "imgs"
    write_images(root, [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(24)],
                 [str(i % 3) for i in range(24)])
    return root


def study_text(images: Path, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        name = "tiny"
        data = "{images}"
        layers = ["layer3.*", "layer4.*"]
        [record]
        k = 12
        batch_size = 8
        num_workers = 0
        [mis]
        backend = "{BACKEND}"
        n_tasks = 2
        k_expl = 2
        [[entry]]
        model = "{RESNET}"
        random = true
        accuracy = "{images}"
        [[entry]]
        name = "eff"
        model = "{EFFNET}"
        random = true
        accuracy = 0.25
        layers = ["blocks.1.*", "blocks.2.*"]
        steps = ["record", "mis", "lens"]
        [entry.lens]
        backend = "{BACKEND}"
        m = 4
        layers = ["blocks.2.*"]
        """) + extra


def write_study(folder: Path, text: str, name: str = "study.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images) -> tuple[Path, object]:
    """The two-entry study run sequentially in this process, whose torch runs on 2 threads: every step runs on the
    study's thread count (``threads``, default 1) whatever the process's, like a ``--jobs`` worker or a Ray task
    (other thread counts cut a forward pass's float sums differently: activations then differ in the last bits)."""
    root = tmp_path_factory.mktemp("ref")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = run_study(write_study(root, study_text(images)), root / "out", progress=False)
        assert torch.get_num_threads() == 2  # the process's own count is given back
    finally:
        torch.set_num_threads(threads)
    return root / "out", run


# ---------------------------------------------------------------------------------------------- parsing
def test_globs_expand_in_natural_order_with_sidecars_and_overrides(tmp_path, monkeypatch, images):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    for epoch in (10, 2, 1):
        (run / f"epoch_{epoch}.pt").write_bytes(b"")
    (run / "epoch_2.json").write_text(json.dumps({"epoch": 2, "accuracy": 0.4}))
    spec = parse_spec({
        "name": "g", "data": str(images), "layers": "layer4.*", "record": {"k": 20}, "mis": {"n_tasks": 3},
        "entry": [{"model": RESNET, "checkpoints": "runs/r/epoch_*.pt", "mis": {"k_expl": 4}},
                  {"name": "rnd", "model": RESNET, "random": True, "layers": ["layer3.*"], "accuracy": 0.1}],
    })
    names = [e.name for e in spec.entries]
    assert names == ["test_resnet-epoch_1", "test_resnet-epoch_2", "test_resnet-epoch_10", "rnd"]
    first, second, tenth, rnd = spec.entries
    assert [first.epoch, second.epoch, tenth.epoch] == [1, 2, 10]  # the sidecar's, else the file name's
    assert second.accuracy == 0.4 and second.accuracy_source == "sidecar epoch_2.json"
    assert first.accuracy is None and first.accuracy_source == ""
    assert Path(tenth.checkpoint) == (run / "epoch_10.pt").resolve()
    assert first.options["mis"] == {"n_tasks": 3, "k_expl": 4} and first.options["record"] == {"k": 20}
    assert first.layers == ("layer4.*",) and rnd.layers == ("layer3.*",) and rnd.accuracy == 0.1
    assert rnd.steps == ("record", "mis") and rnd.data == str(images)
    assert sorted(["e10", "e2", "E1"], key=natural_key) == ["E1", "e2", "e10"]


@pytest.mark.parametrize("table,match", [
    ({"entry": [{"model": RESNET}, {"model": RESNET}]}, r"entry 2 \(.*\) and .*entry 1 .* both called 'test_resnet'"),
    ({"entry": [{"model": RESNET, "colour": 1}]}, r"entry 1 .*unknown key 'colour'; valid keys are .*checkpoints"),
    ({"entry": [{"model": RESNET, "mis": {"ntasks": 3}}]},
     r"entry 1 .*\[entry.mis\] table: unknown option 'ntasks'.*n_tasks"),
    ({"mis": {"tua": 1.0}, "entry": [{"model": RESNET}]}, r"s.toml, \[mis\] table: unknown option 'tua'.*tau"),
    ({"record": {"k": "many"}, "entry": [{"model": RESNET}]}, r"\[record\] table: k \(--k\) must be an integer, "
                                                               r"got 'many'"),
    # the step tables are checked by the steps' options classes: the nearest option, values in range
    ({"mis": {"n_task": 3}, "entry": [{"model": RESNET}]},
     r"s.toml, \[mis\] table: unknown option 'n_task'; did you mean 'n_tasks'\?"),
    ({"mis": {"tau": 0.0}, "entry": [{"model": RESNET}]}, r"\[mis\] table: tau \(--tau\) must be positive, got 0"),
    ({"mis": {"n_tasks": 0}, "entry": [{"model": RESNET}]}, r"\[mis\] table: n_tasks \(--n-tasks\) must be at least 1"),
    ({"mis": {"write": False}, "entry": [{"model": RESNET}]}, r"\[mis\] table: option 'write' is set by the study"),
    ({"featviz": {"per_sid": 2}, "entry": [{"model": RESNET}]},
     r"\[featviz\] table: unknown option 'per_sid'; did you mean 'per_side'\?"),
    ({"featviz": {"k_expl": 0}, "entry": [{"model": RESNET}]}, r"\[featviz\] table: k_expl \(--k-expl\) must be at "
                                                                r"least 1"),
    ({"mis": {"n_tasks": 3}, "entry": [{"model": RESNET, "mis": {"tua": 0.5}}]},
     r"entry 1 .*\[entry.mis\] table: unknown option 'tua'; did you mean 'tau'\?"),
    ({"record": {"k": 3, "layers": ["x"]}, "entry": [{"model": RESNET}]},  # a top-level key written after [record]
     r"s.toml, \[record\] table: unknown option 'layers'.*belongs to the \[record\] table.*before the first table"),
    ({"threads": 0, "entry": [{"model": RESNET}]}, r"'threads' is a whole number of torch threads >= 1, got 0"),
    ({"lens": {"m": 3, "nope": 1}, "entry": [{"model": RESNET}]},
     r"\[lens\] table: unknown option 'nope' \(the options are: .*n_init.*crop"),
    ({"lens": {"m": 0}, "entry": [{"model": RESNET}]}, r"\[lens\] table: m \(--m\) must be at least 1"),
    ({"entry": [{"model": RESNET, "lens": {"crop": "sideways"}}]},
     r"entry 1 .*\[entry.lens\] table: crop \(--crop\) must be one of activation, none, relevance.*sideways"),
    ({"entry": [{"model": RESNET, "checkpoints": "nowhere/*.pt"}]}, r"entry 1 .*glob 'nowhere/\*.pt' matches no file"),
    ({"entry": [{"model": "timm:not_a_net"}]}, r"entry 1 .*timm has no architecture 'not_a_net'"),
    ({"entry": [{"model": "timm:test_resnet?classes=3"}]}, r"entry 1 .*model option 'classes=3'"),
    ({"entry": [{"model": RESNET, "steps": ["mis"]}]}, r"steps must include 'record'"),
    ({"entry": [{"model": RESNET, "accuracy": "sidecar"}]}, r"accuracy = \"sidecar\" needs"),
    ({"entry": []}, r"no \[\[entry\]\] tables"),
    ({"colour": 1, "entry": [{"model": RESNET}]}, r"unknown key 'colour'"),
])
def test_bad_study_files_are_refused_naming_entry_and_fix(table, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=match):
        parse_spec({"data": "demo", **table}, "s.toml")


def test_unreadable_file_and_foreign_folder(tmp_path, images):
    bad = write_study(tmp_path, "name = 'x'\n[[entry]\nmodel = 1\n", "bad.toml")
    with pytest.raises(BadInput, match=r"cannot read study file .*bad.toml.*line 2"):
        load_spec(bad)
    with pytest.raises(MissingFile, match="does not exist"):
        load_spec(tmp_path / "missing.toml")
    one = write_study(tmp_path, study_text(images), "one.toml")
    other = write_study(tmp_path, study_text(images).replace('name = "tiny"', 'name = "other"'), "other.toml")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "study.toml").write_text(one.read_text())
    with pytest.raises(BadInput, match=r"out holds the study 'tiny', not 'other' \(the name in .*other.toml\); give "
                                       r"another --out"):
        run_study(other, tmp_path / "out", progress=False)
    (tmp_path / "notastudy").mkdir()
    (tmp_path / "notastudy" / "x.txt").write_text("x")
    with pytest.raises(BadInput, match="not a study folder"):
        run_study(one, tmp_path / "notastudy", progress=False)


# ---------------------------------------------------------------------------------------------- the table
def test_summary_equals_values_computed_from_each_atlas(reference, images):
    out, run = reference
    assert run.ok and run.failed == {}
    table = pd.read_parquet(out / "study.parquet")
    assert list(table["entry"]) == ["test_resnet-random", "eff"]
    for row in table.itertuples(index=False):
        atlas = Atlas(out / "atlases" / row.entry)
        units, scores = atlas.units(), atlas.scores()
        assert (row.layers, row.units, row.constant_units) == (units["layer"].nunique(), len(units),
                                                               units["constant"].sum())
        mis = scores[(scores["metric"] == "mis") & (scores["backend"] == BACKEND)]
        v = np.sort(mis["value"].dropna().to_numpy())  # constant units carry a missing score
        assert row.mis_units == len(v) == int((~units["constant"]).sum())
        assert row.mis_mean == pytest.approx(v.mean(), abs=1e-12)
        assert row.mis_p5 == pytest.approx(np.percentile(v, 5), abs=1e-12)
        assert row.mis_p95 == pytest.approx(np.percentile(v, 95), abs=1e-12)
        assert row.mis_worst5 == pytest.approx(v[: math.ceil(0.05 * len(v))].mean(), abs=1e-12)
        task_acc = scores[(scores["metric"] == "mis_accuracy")]["value"].dropna()
        assert row.mis_accuracy == pytest.approx(task_acc.mean(), abs=1e-12)
        assert row.record_s > 0 and row.mis_s > 0
    eff = table.set_index("entry").loc["eff"]
    scores = Atlas(out / "atlases" / "eff").scores()
    assert eff.clarity_mean == pytest.approx(scores[scores["metric"] == "clarity"]["value"].mean(), abs=1e-12)
    assert eff.polysemanticity_mean == pytest.approx(
        scores[scores["metric"] == "polysemanticity"]["value"].mean(), abs=1e-12)
    measures = pd.read_parquet(Atlas(out / "atlases" / "eff").backend_path("lens", BACKEND) / "measures.parquet")
    assert eff.redundancy_mean == pytest.approx(measures["redundancy"].mean(), abs=1e-12)
    assert eff.accuracy == 0.25 and eff.accuracy_source == "given"
    # the measured accuracy: the share of images whose top-1 class is their folder's, computed here by hand
    resnet = table.set_index("entry").loc["test_resnet-random"]
    loaded = load_model(RESNET, pretrained=False)
    data = Atlas(out / "atlases" / "test_resnet-random").dataset()
    with torch.no_grad():
        hits = [int(loaded.model(loaded.transform(data.image(i))[None]).argmax()) == int(lbl)
                for i, lbl in enumerate(data.samples["label"])]
    assert resnet.accuracy == pytest.approx(np.mean(hits), abs=1e-12)
    assert resnet.accuracy_source.startswith("measured on") and np.isnan(resnet.clarity_mean)


def test_duckdb_views(reference):
    out, _ = reference
    study = Study.load(out)
    counts = study.query("SELECT entry, count(*) AS n FROM units GROUP BY entry ORDER BY entry")
    assert dict(zip(counts["entry"], counts["n"])) == {e.name: len(study.atlas(e).units()) for e in study.entries}
    per_metric = study.query("SELECT entry, metric, count(value) AS n FROM scores GROUP BY ALL")
    assert set(per_metric["metric"]) == {"mis", "mis_accuracy", "clarity", "polysemanticity", "max_similarity"}
    joined = study.query("SELECT s.entry, u.type, avg(s.value) AS mis FROM units u JOIN scores s USING (entry, layer, "
                         "unit) WHERE s.metric = 'mis' GROUP BY ALL")
    units = study.atlas("eff").units().merge(study.atlas("eff").scores().query("metric == 'mis'"), on=["layer", "unit"])
    for layer_type, g in units.groupby("type"):
        got = joined[(joined["entry"] == "eff") & (joined["type"] == layer_type)]["mis"].item()
        assert got == pytest.approx(g["value"].mean())
    columns = ["entry", "units", "mis_mean", "mis_p5", "accuracy", "clarity_mean"]
    pd.testing.assert_frame_equal(study.query(f"SELECT {', '.join(columns)} FROM study"),
                                  pd.read_parquet(out / "study.parquet")[columns], check_dtype=False)


# ---------------------------------------------------------------------------------------------- the runner
def needed_ids(atlas: Atlas, n: int = 6) -> set[int]:
    """The samples MIS with n_tasks=2, k_expl=2 embeds: the first 6 top and bottom exemplars of every scored unit."""
    units, ids = atlas.units(), set()
    for info in atlas.layers:
        rows = units[units["layer"] == info.name].sort_values("unit")
        keep = torch.from_numpy(~rows["constant"].to_numpy(bool) & (rows["nonfinite"].to_numpy() == 0))
        ex = atlas.exemplars(info.name)
        ids |= set(ex.top_ids[keep, :n].flatten().tolist()) | set(ex.bottom_ids[keep, :n].flatten().tolist())
    return ids


def test_steps_share_a_record_pass_and_embeddings(reference, tmp_path):
    out, run = reference
    steps = {r["name"]: r["steps"] for r in run.state["entries"]}
    assert [s["record"]["result"]["shared_pass"] for s in steps.values()] == [2, 2]  # one record_many pass
    assert list(steps["test_resnet-random"]) == ["record", "accuracy", "mis"]
    assert list(steps["eff"]) == ["record", "mis", "lens"]
    # whichever entry scored second found the other's embeddings in the study's pool: no image embedded twice
    first = needed_ids(Atlas(out / "atlases" / "test_resnet-random"))
    second = needed_ids(Atlas(out / "atlases" / "eff"))
    misses = [steps[name]["mis"]["result"]["cache_misses"] for name in ("test_resnet-random", "eff")]
    assert sum(misses) == len(first | second) and min(misses) == 0
    pool = next((out / "embeddings").glob("*/*"))
    cache = Atlas(out / "atlases" / "eff").backend_path("embeddings", BACKEND)
    assert sorted(p.name for p in pool.glob("shard-*")) == sorted(p.name for p in cache.glob("shard-*"))
    # self-contained: without the pool every atlas still holds every embedding it used
    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "embeddings")
    for name, ids in (("test_resnet-random", first), ("eff", second)):
        cached = EmbeddingCache(Atlas(copy / "atlases" / name), load_backend(BACKEND))
        assert all((i, None) in cached for i in ids)


def test_done_steps_are_skipped_and_an_interrupted_record_resumes(tmp_path, images, reference, monkeypatch):
    ref_out, _ = reference
    path = write_study(tmp_path, study_text(images).replace("num_workers = 0", "num_workers = 0\ncheckpoint_every = 8"))
    real_open = unitlens.data.datasets.open_rgb
    calls = {"n": 0}

    def flaky(p):
        calls["n"] += 1
        if calls["n"] == 19:  # a Ctrl-C while the shared record pass reads its 19th image
            raise KeyboardInterrupt
        return real_open(p)

    monkeypatch.setattr(unitlens.data.datasets, "open_rgb", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_study(path, tmp_path / "out", progress=False)
    state = json.loads((tmp_path / "out" / "study.json").read_text())
    assert {r["steps"]["record"]["status"] for r in state["entries"]} == {"running"}
    assert not Atlas(tmp_path / "out" / "atlases" / "eff").complete
    monkeypatch.setattr(unitlens.data.datasets, "open_rgb", real_open)
    again = run_study(path, tmp_path / "out", progress=False)
    assert again.ok
    for r in again.state["entries"]:
        assert r["steps"]["record"]["result"]["images"] == 24
        assert_same_atlas(Atlas(ref_out / "atlases" / r["name"]), Atlas(tmp_path / "out" / "atlases" / r["name"]))
    manifest = Atlas(tmp_path / "out" / "atlases" / "eff").manifest
    scores_file = tmp_path / "out" / "atlases" / "eff" / "scores.parquet"
    stamp = scores_file.stat().st_mtime_ns
    third = run_study(path, tmp_path / "out", progress=False)  # everything done: nothing runs again
    assert third.state["entries"] == again.state["entries"]
    assert scores_file.stat().st_mtime_ns == stamp and Atlas(tmp_path / "out" / "atlases" / "eff").manifest == manifest


def test_a_failing_entry_is_isolated_and_the_exit_status_says_so(tmp_path, images, monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=200, soft_wrap=True))
    wrong = tmp_path / "wrong.pt"
    torch.save(load_model(EFFNET, pretrained=False).model.state_dict(), wrong)  # another architecture's weights
    text = study_text(images).split("[[entry]]")[0] + textwrap.dedent(f"""\
        [[entry]]
        name = "broken"
        model = "{RESNET}"
        checkpoint = "{wrong}"
        [[entry]]
        name = "fine"
        model = "{RESNET}"
        random = true
        """)
    result = CliRunner().invoke(app, ["study", "run", str(write_study(tmp_path, text)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "failed: broken: record:" in result.output and "1 of 2 entries failed" in result.output
    state = json.loads((tmp_path / "o" / "study.json").read_text())
    broken, fine = state["entries"]
    assert broken["steps"]["record"]["status"] == "failed" and "missing from the checkpoint" in \
        broken["steps"]["record"]["error"] or "has shape" in broken["steps"]["record"]["error"]
    assert broken["steps"]["mis"]["status"] == "pending"
    assert [s["status"] for s in fine["steps"].values()] == ["done", "done"]
    table = pd.read_parquet(tmp_path / "o" / "study.parquet").set_index("entry")
    assert table.loc["broken", "status"] == "failed" and table.loc["broken", "failed_step"] == "record"
    assert table.loc["fine", "status"] == "done" and table.loc["fine", "mis_mean"] > 0


def assert_same_study(ours: Path, theirs: Path) -> None:
    """The same study table (but the timing columns) and the same atlases (exemplars, units, scores)."""
    pd.testing.assert_frame_equal(pd.read_parquet(ours / "study.parquet").drop(columns=TIMINGS),
                                  pd.read_parquet(theirs / "study.parquet").drop(columns=TIMINGS), check_exact=True)
    for path in sorted((theirs / "atlases").iterdir()):
        a, b = Atlas(path), Atlas(ours / "atlases" / path.name)
        assert_same_atlas(a, b)
        key = ["metric", "backend", "layer", "unit"]
        pd.testing.assert_frame_equal(a.scores().sort_values(key).reset_index(drop=True),
                                      b.scores().sort_values(key).reset_index(drop=True), check_exact=True)


def test_worker_processes_give_the_same_study(tmp_path, images, reference):
    """``--jobs 2`` (each worker with its own torch defaults) gives exactly the sequential run's tables and atlases:
    every step runs on the study's thread count, in every executor."""
    ref_out, _ = reference
    path = write_study(tmp_path, study_text(images))
    with pytest.raises(BadInput, match=r"\(--cpus-per-task\) is what each Ray task asks for .*threads = N"):
        run_study(path, tmp_path / "out", jobs=2, cpus_per_task=1, progress=False)  # it would not set the threads
    run = run_study(path, tmp_path / "out", jobs=2, progress=False)
    assert run.ok, run.failed
    steps = {r["name"]: r["steps"] for r in run.state["entries"]}
    assert [s["record"]["result"]["shared_pass"] for s in steps.values()] == [1, 1]  # split over the two workers
    assert_same_study(tmp_path / "out", ref_out)


def test_ray_gives_the_same_study_as_the_sequential_run(tmp_path, images, reference):
    ray = pytest.importorskip("ray")
    ref_out, _ = reference
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run = run_study(write_study(tmp_path, study_text(images)), tmp_path / "out", ray="local", cpus_per_task=1,
                        progress=False)
    finally:
        ray.shutdown()
    assert run.ok, run.failed
    steps = {r["name"]: r["steps"] for r in run.state["entries"]}
    assert [s["record"]["result"]["shared_pass"] for s in steps.values()] == [1, 1]  # one Ray task per entry
    assert_same_study(tmp_path / "out", ref_out)


def test_the_memory_budget_bounds_a_shared_record_pass(tmp_path, images):
    text = textwrap.dedent(f"""\
        data = "{images}"
        steps = ["record"]
        [record]
        k = 6
        num_workers = 0
        [[entry]]
        model = "{RESNET}"
        random = true
        [[entry]]
        model = "{EFFNET}"
        random = true
        """)
    path = write_study(tmp_path, text)
    tight = run_study(path, tmp_path / "tight", memory_budget_mb=0.01, progress=False)  # no two models fit
    roomy = run_study(path, tmp_path / "roomy", progress=False)
    assert [r["steps"]["record"]["result"]["shared_pass"] for r in tight.state["entries"]] == [1, 1]
    assert [r["steps"]["record"]["result"]["shared_pass"] for r in roomy.state["entries"]] == [2, 2]
    for name in ("test_resnet-random", "test_efficientnet-random"):
        assert_same_atlas(Atlas(tmp_path / "tight" / "atlases" / name), Atlas(tmp_path / "roomy" / "atlases" / name))


# ---------------------------------------------------------------------------------------------- staleness
def mis_rows(atlas: Atlas) -> pd.DataFrame:
    scores = atlas.scores()
    return scores[scores["metric"] == "mis"]


def assert_table_is_the_atlases(out: Path) -> None:
    """Every MIS and lens column of the study table equals what the entries' atlases hold now."""
    table = pd.read_parquet(out / "study.parquet").set_index("entry")
    for entry, row in table.iterrows():
        atlas = Atlas(out / "atlases" / str(entry))
        units, v = atlas.units(), mis_rows(atlas)["value"].dropna().to_numpy()
        assert (row.units, row.mis_units) == (len(units), len(v))
        assert row.mis_mean == pytest.approx(v.mean(), abs=1e-12)
        if not pd.isna(row.clarity_mean):
            scores = atlas.scores()
            assert row.clarity_mean == pytest.approx(scores[scores["metric"] == "clarity"]["value"].mean(), abs=1e-12)


def test_a_replaced_checkpoint_redoes_the_record_and_the_steps_after_it(tmp_path, images):
    weights = tmp_path / "weights.pt"
    torch.save(load_model(RESNET, pretrained=False, seed=0).model.state_dict(), weights)
    text = study_text(images).split("[[entry]]")[0] + f'[[entry]]\nname = "ft"\nmodel = "{RESNET}"\n' \
                                                      f'checkpoint = "{weights}"\n'
    path = write_study(tmp_path, text)
    first = run_study(path, tmp_path / "out", progress=False)
    before = first.table.set_index("entry").loc["ft", "mis_mean"]
    torch.save(load_model(RESNET, pretrained=False, seed=1).model.state_dict(), weights)  # other weights, same file
    notes: list[str] = []
    again = run_study(path, tmp_path / "out", progress=False, notify=notes.append)
    assert again.ok and again.redone == {"ft": ["record", "mis"]}
    assert "entry ft: record redone (checkpoint content changed); mis redone (it reads the record)" in notes
    atlas = Atlas(tmp_path / "out" / "atlases" / "ft")
    assert atlas.manifest.config.weights_hash == \
        load_model(RESNET, pretrained=False, checkpoint=weights).weights_hash()
    assert_table_is_the_atlases(tmp_path / "out")
    assert again.table.set_index("entry").loc["ft", "mis_mean"] != before
    assert run_study(path, tmp_path / "out", progress=False).redone == {}  # now up to date
    assert run_study(path, tmp_path / "out", progress=False, force=True).redone == {"ft": ["record", "mis"]}


def test_changed_options_redo_exactly_the_steps_they_reach(tmp_path, images):
    path = write_study(tmp_path, study_text(images))
    out = tmp_path / "out"
    run_study(path, out, progress=False)

    def rerun(text: str, **kw) -> dict:
        notes: list[str] = []
        path.write_text(text)
        manifests = {e: (out / "atlases" / e / "manifest.json").stat().st_mtime_ns
                     for e in ("test_resnet-random", "eff")}
        run = run_study(path, out, progress=False, notify=notes.append, **kw)
        assert run.ok, run.failed
        for entry, before in manifests.items():  # a record not redone left its atlas untouched
            same = (out / "atlases" / entry / "manifest.json").stat().st_mtime_ns == before
            assert same == ("record" not in run.redone.get(entry, []))
        assert_table_is_the_atlases(out)
        return run.redone, notes

    # a speed-only record option changes nothing; eff's lens m reaches its lens step only
    text = study_text(images).replace("batch_size = 8", "batch_size = 5").replace("m = 4", "m = 3")
    redone, notes = rerun(text)
    assert redone == {"eff": ["lens"]} and notes == ["entry eff: lens redone (m changed)"]
    store = Atlas(out / "atlases" / "eff").backend_path("lens", BACKEND)
    assert {layer["m"] for layer in json.loads((store / "meta.json").read_text())["layers"].values()} == {3}
    # eff's MIS on fewer layers: no score of the layers it left is kept
    text = text.replace('steps = ["record", "mis", "lens"]', 'steps = ["record", "mis", "lens"]\n[entry.mis]\n'
                                                              'layers = ["blocks.2.*"]')
    assert rerun(text)[0] == {"eff": ["mis"]}
    assert set(mis_rows(Atlas(out / "atlases" / "eff"))["layer"]) == {"blocks.2.0.conv_exp", "blocks.2.0.bn1",
                                                                      "blocks.2.0.conv_pwl", "blocks.2.0.bn2"}
    # a top-level MIS option reaches every entry's MIS
    text = text.replace("n_tasks = 2", "n_tasks = 3")
    assert rerun(text)[0] == {"test_resnet-random": ["mis"], "eff": ["mis"]}
    for entry in ("test_resnet-random", "eff"):
        assert {json.loads(p)["n_tasks"] for p in mis_rows(Atlas(out / "atlases" / entry))["params"]} == {3}
    # k reaches every record and what reads it; the accuracy step measures the model, not the atlas
    text = text.replace("k = 12", "k = 10")
    redone, notes = rerun(text)
    assert redone == {"test_resnet-random": ["record", "mis"], "eff": ["record", "mis", "lens"]}
    assert "entry eff: record redone (k changed); mis, lens redone (they read the record)" in notes
    assert all(Atlas(out / "atlases" / e).exemplars(layer).k == 10 for e, layer in
               (("test_resnet-random", "layer4.0.conv1"), ("eff", "blocks.2.0.conv_pwl")))
    # a redo that fails leaves no old value in the table
    path.write_text(text.replace("n_tasks = 3", "n_tasks = 30"))  # more exemplars than k = 10: MIS fails
    failed = run_study(path, out, progress=False)
    assert set(failed.failed) == {"test_resnet-random", "eff"} and failed.table["mis_mean"].isna().all()
    assert (failed.table["status"] == "failed").all()
    # --force: every step of the named entries (eff's MIS is redone for n_tasks, back at 3)
    redone, notes = rerun(text, force=True, entries=["test_resnet-random"])
    assert redone == {"test_resnet-random": ["record", "accuracy", "mis"], "eff": ["mis"]}
    assert notes == ["entry test_resnet-random: record, accuracy, mis redone (--force)",
                     "entry eff: mis redone (n_tasks changed)"]
    with pytest.raises(BadInput, match=r"--force names no entry 'nope' of study tiny; it has test_resnet-random, eff"):
        run_study(path, out, progress=False, force=True, entries=["nope"])
    with pytest.raises(BadInput, match=r"entry names \(eff\) are for force"):
        run_study(path, out, progress=False, entries=["eff"])


def test_the_users_study_file_is_the_source(tmp_path, images):
    text = study_text(images)
    path = write_study(tmp_path, text)
    out = tmp_path / "out"
    run_study(path, out, progress=False)
    # edited after the run: eff removed, a new entry added
    edited = text.split('[[entry]]\nname = "eff"')[0] + \
        f'[[entry]]\nname = "new"\nmodel = "{EFFNET}"\nrandom = true\nlayers = ["blocks.2.*"]\n'
    path.write_text(edited)
    notes: list[str] = []
    run = run_study(path, out, progress=False, notify=notes.append)
    assert run.ok and run.removed == ["eff"] and run.redone == {}
    assert (out / "study.toml").read_text() == edited  # the folder keeps the file that ran
    assert "entry eff is not in the study file any more: its atlas is kept (status removed); unitlens study run " \
           "--prune deletes it" in notes
    table = pd.read_parquet(out / "study.parquet").set_index("entry")
    assert list(table.index) == ["test_resnet-random", "new", "eff"]
    assert list(table["status"]) == ["done", "done", "removed"] and table.loc["eff", "mis_mean"] > 0
    assert Atlas(out / "atlases" / "eff").complete
    study = Study.load(out)
    assert [(e.name, e.status) for e in study.entries][-1] == ("eff", "removed")
    assert set(study.query("SELECT DISTINCT entry FROM units")["entry"]) == {"test_resnet-random", "new"}
    # --prune deletes what was removed
    pruned = run_study(path, out, progress=False, prune=True)
    assert pruned.removed == [] and not (out / "atlases" / "eff").exists()
    assert list(pd.read_parquet(out / "study.parquet")["entry"]) == ["test_resnet-random", "new"]


# ---------------------------------------------------------------------------------------------- read-only SQL
@pytest.fixture(scope="module")
def study_copy(reference, tmp_path_factory) -> Path:
    """A copy of the reference study for the tests that attack or damage it."""
    copy = tmp_path_factory.mktemp("copy") / "study"
    shutil.copytree(reference[0], copy)
    return copy


@pytest.mark.parametrize("sql", [
    "COPY (SELECT * FROM study) TO '{study}/study.parquet' (FORMAT parquet)",
    "COPY (SELECT 1 AS a) TO '{study}/x.csv'",
    "CREATE TABLE t AS SELECT 1 AS a",
    "CREATE VIEW v AS SELECT 1 AS a",
    "ATTACH '{study}/x.db' AS x",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM read_text('{study}/study.json')",
    "SELECT * FROM read_parquet('{study}/study.parquet')",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SELECT 1 AS a; DROP VIEW units",
])
def test_study_query_is_read_only(study_copy, sql):
    before = {p: p.read_bytes() for p in study_copy.rglob("*") if p.is_file()}
    with pytest.raises(BadInput, match=r"study queries only read"):
        Study.load(study_copy).query(sql.format(study=study_copy))
    assert {p: p.read_bytes() for p in study_copy.rglob("*") if p.is_file()} == before
    assert len(Study.load(study_copy).query("SELECT * FROM units JOIN study USING (entry)")) > 0


def test_study_query_refusal_is_a_clear_cli_error(study_copy):
    result = CliRunner().invoke(app, ["study", "query", str(study_copy), "CREATE TABLE t AS SELECT 1"])
    assert result.exit_code == 2 and "study queries only read: CREATE is not a query" in result.output
    result = CliRunner().invoke(app, ["study", "query", str(study_copy), "INSTALL httpfs"])
    assert result.exit_code == 2 and "study queries only read: INSTALL is not a query" in result.output


# ---------------------------------------------------------------------------------------------- the study table file
def test_a_damaged_or_foreign_study_table_is_named_with_its_fix(study_copy, tmp_path):
    from starlette.testclient import TestClient

    from unitlens.errors import CorruptFile
    from unitlens.explorer import Catalog, create_app
    from unitlens.study import write_summary

    study = tmp_path / "study"
    shutil.copytree(study_copy, study)
    table = study / "study.parquet"
    good = table.read_bytes()
    fix = rf"{study}/study.parquet.*unitlens study summary {study}"
    table.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CorruptFile, match=rf"cannot read {fix}"):
        Study.load(study).query("SELECT * FROM study")
    with TestClient(create_app(Catalog([study]))) as client:
        r = client.get("/api/study/study")
        assert 400 <= r.status_code < 600 and "unitlens study summary" in r.json()["error"]
    pd.read_parquet(study_copy / "study.parquet").to_parquet(table)  # a valid table, but not written as this study's
    with pytest.raises(CorruptFile, match=rf"{fix}"):
        Study.load(study).query("SELECT * FROM study")
    other = tmp_path / "other"
    shutil.copytree(study_copy, other)
    state = json.loads((other / "study.json").read_text())
    state["entries"] = state["entries"][:1]
    (other / "study.json").write_text(json.dumps(state))
    write_summary(other)
    shutil.copyfile(other / "study.parquet", table)  # this study's table, written when it had one entry
    assert list(Study.load(study).query("SELECT entry FROM study")["entry"]) == ["test_resnet-random", "eff"]
    state["name"] = "another"
    (other / "study.json").write_text(json.dumps(state))
    write_summary(other)
    shutil.copyfile(other / "study.parquet", table)  # another study's table
    with pytest.raises(CorruptFile, match=r"study.parquet is the table of study 'another', not of 'tiny'; rewrite it: "
                                          r"unitlens study summary"):
        Study.load(study).query("SELECT * FROM study")
    write_summary(study)  # the fix the messages name
    assert len(Study.load(study).query("SELECT * FROM study")) == 2


# ---------------------------------------------------------------------------------------------- wording
def test_lock_messages_name_the_study_folder_and_a_takeover_is_a_note(study_copy, tmp_path, monkeypatch):
    import os
    import socket
    import subprocess
    import sys

    from unitlens.errors import AtlasBusy

    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=300, soft_wrap=True))
    monkeypatch.setattr(unitlens.cli.common, "err_console", Console(width=300, soft_wrap=True, stderr=True))
    study = tmp_path / "study"
    shutil.copytree(study_copy, study)
    lock = study / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname() + "-elsewhere", "pid": os.getpid(),
                                "command": "study run", "started": 0}))
    with pytest.raises(AtlasBusy, match=rf"study folder {study} is being written by 'study run'"):
        Study.load(study).summary(write=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "command": "study run",
                                "started": 0}))
    result = CliRunner().invoke(app, ["study", "summary", str(study)])
    assert result.exit_code == 0, result.output
    assert f"note: taking over the stale lock of study folder {study}: 'study run' (pid {int(dead.stdout)}" in \
        result.output
    assert "UserWarning" not in result.output and "contextlib" not in result.output


def test_parser_errors_keep_their_table_names_on_the_command_line(tmp_path, images):
    path = write_study(tmp_path, study_text(images).replace("num_workers = 0", "num_workers = 0\nlayers = ['x']"))
    result = CliRunner().invoke(app, ["study", "run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "[record] table: unknown option 'layers'" in result.output
