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


@pytest.fixture
def one_thread():
    """Torch on one thread within the test (as the reference study ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images) -> tuple[Path, object]:
    """The two-entry study run sequentially in this process, with one torch thread like a 1-CPU Ray task (other
    thread counts cut a forward pass's float sums differently: activations then differ in the last bits)."""
    root = tmp_path_factory.mktemp("ref")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_study(write_study(root, study_text(images)), root / "out", progress=False)
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
    ({"entry": [{"model": RESNET, "mis": {"ntasks": 3}}]}, r"entry 1 .*unknown \[mis\] option 'ntasks'.*n_tasks"),
    ({"mis": {"tua": 1.0}, "entry": [{"model": RESNET}]}, r"top level: unknown \[mis\] option 'tua'.*tau"),
    ({"record": {"k": "many"}, "entry": [{"model": RESNET}]}, r"option 'k' = 'many' should be a int"),
    ({"lens": {"m": 3, "nope": 1}, "entry": [{"model": RESNET}]}, r"unknown \[lens\] option 'nope'.*crop.*n_init"),
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
    other = write_study(tmp_path, study_text(images).replace("k = 12", "k = 14"), "other.toml")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "study.toml").write_text(one.read_text())
    with pytest.raises(BadInput, match=r"holds another study .*study.toml differs from .*other.toml.*unitlens study "
                                       r"run .*study.toml --out"):
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


def test_done_steps_are_skipped_and_an_interrupted_record_resumes(tmp_path, images, reference, monkeypatch,
                                                                  one_thread):
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
    ref_out, _ = reference
    run = run_study(write_study(tmp_path, study_text(images)), tmp_path / "out", jobs=2, cpus_per_task=1,
                    progress=False)
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
