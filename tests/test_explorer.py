"""The explorer's API, file serving and static report, on the hand-built colour atlases of ``conftest.py``.

Expectations are independent of the explorer: values read straight from the atlas files (parquet, safetensors),
closed forms of the histogram backend (cos(red, blue) = 1/3, cos(grey, colour) = 0, so a red detector's 2-AFC task
has Δ⁺ = 1 − 1/3 and Δ⁻ = 1/3 − 1), and the task layout written out by hand.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import re
import shutil
import socket
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file
from starlette.testclient import TestClient
from typer.testing import CliRunner

import unitlens.cli.common
from unitlens.cli import app as cli
from unitlens.errors import AtlasError, BadInput, CorruptFile, MissingFile
from unitlens.explorer import Catalog, create_app, write_report
from unitlens.explorer.defaults import MAX_UPLOAD_BYTES
from unitlens.explorer.server import listen, preload_link

from conftest import COLOURS

runner = CliRunner()
RED, GREEN, BLUE, GREY, CONSTANT, SUM = range(6)  # the units of both layers of atlas a


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=250, soft_wrap=True))


@pytest.fixture(scope="module")
def client(explorer_atlases):
    catalog = Catalog([explorer_atlases["a"], explorer_atlases["b"], explorer_atlases["study"]])
    with TestClient(create_app(catalog)) as c:
        yield c


def png(rgb, size=(24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


def colour(sample_id: int) -> str:
    """The colour of a sample of the shared explorer data (ids: blue 0-29, green 30-59, grey 60-89, red 90-119)."""
    return ("blue", "green", "grey", "red")[sample_id // 30]


def hist_cos(a: str, b: str) -> float:
    """Cosine of two colours' 4-bin histograms: 1 within a colour, 0 between grey and another, 1/3 otherwise."""
    return 1.0 if a == b else 0.0 if "grey" in (a, b) else 1 / 3


def red_delta_pos(negatives) -> float:
    """Δ⁺ of a red query against red explanations and these negative explanations."""
    return 1 - float(np.mean([hist_cos("red", colour(e)) for e in negatives]))


def scores(atlas, metric: str, layer: str) -> pd.Series:
    table = pd.read_parquet(atlas / "scores.parquet")
    rows = table[(table["metric"] == metric) & (table["layer"] == layer)]
    return rows.set_index("unit")["value"].sort_index()


# ---------------------------------------------------------------------------------------------- catalog
def test_catalog_names_atlases_uniquely_and_refuses_what_is_not_an_atlas(explorer_atlases, tmp_path):
    catalog = Catalog([explorer_atlases["a"], explorer_atlases["b"], explorer_atlases["a"], explorer_atlases["study"]])
    assert list(catalog.atlases) == ["demo", "demo-2", "rgb", "rgb-grey"]  # a given twice is served once
    assert catalog.studies["colours"].atlas_names == {"rgb": "rgb", "rgb-grey": "rgb-grey"}
    (tmp_path / "folder").mkdir()
    with pytest.raises(AtlasError, match="neither an atlas.*unitlens record"):
        Catalog([tmp_path / "folder"])
    with pytest.raises(MissingFile, match="does not exist"):
        Catalog([tmp_path / "missing"])
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFile, match="record the atlas again"):
        Catalog([tmp_path / "damaged"])


def test_cli_refuses_a_folder_that_is_not_an_atlas(tmp_path):
    (tmp_path / "x").mkdir()
    for args in (["serve", str(tmp_path / "x"), "--port", "0"], ["report", str(tmp_path / "x"), "--out",
                                                                 str(tmp_path / "r")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and "neither an atlas" in result.output


# ---------------------------------------------------------------------------------------------- API values
def test_overview_counts_and_mis_by_layer(client, explorer_atlases):
    a = explorer_atlases["a"]
    o = client.get("/api/atlas/demo").json()
    units = pd.read_parquet(a / "units.parquet")
    assert o["counts"]["units"] == len(units) == 12 and o["counts"]["constant"] == int(units["constant"].sum()) == 2
    mis = scores(a, "mis", "detect")
    assert o["counts"]["scored"] == 2 * int(mis.notna().sum())
    row = {r["layer"]: r for r in o["layers"]}["detect"]
    assert row["mis_mean"] == pytest.approx(mis.dropna().mean(), rel=1e-4)
    assert row["mis_p5"] == pytest.approx(np.quantile(mis.dropna(), 0.05), rel=1e-4)
    assert row["clarity"] == pytest.approx(scores(a, "clarity", "detect").mean(), rel=1e-4)
    assert row["labels"].count(" (1)") == 3  # the three most frequent labels: red, green, blue, grey once each
    assert o["figures"] == ["figures/mis_by_layer.png"] and o["notes"] == []
    assert o["relevance"][0]["class_name"] == "red" and o["audits"][0]["verdicts"]["valid"] >= 1


def test_views_say_what_to_run_for_missing_results(client, explorer_atlases):
    o = client.get("/api/atlas/demo-2").json()
    assert any("unitlens mis" in n for n in o["notes"]) and any("unitlens lens label" in n for n in o["notes"])
    layer = client.get("/api/atlas/demo-2/layer/detect").json()
    assert "mis" not in layer["columns"] and any("unitlens mis" in n for n in layer["notes"])
    unit = client.get("/api/atlas/demo-2/layer/detect/unit/0").json()
    assert unit["mis"] is None and any("unitlens mis" in n for n in unit["notes"])


def test_layer_columns_are_the_stored_values(client, explorer_atlases):
    a = explorer_atlases["a"]
    d = client.get("/api/atlas/demo/layer/pool").json()
    cols = d["columns"]
    top_ids = load_file(str(a / "exemplars" / "pool.safetensors"))["top_ids"][:, 0].tolist()
    assert cols["top_id"] == top_ids and d["n_units"] == 6
    mis = scores(a, "mis", "pool")
    assert cols["mis"] == [None if np.isnan(v) else pytest.approx(v, rel=1e-3) for v in mis]
    labels = pd.read_parquet(a / "labels.parquet")
    labels = labels[labels["layer"] == "pool"].set_index("unit")["label"]
    assert [cols["label"][u] for u in labels.index] == labels.tolist()
    assert cols["label"][:4] == ["red", "green", "blue", "grey"] and cols["constant"][CONSTANT]
    assert cols["rel_0"][RED] == pytest.approx(0.40) and cols["audit_0"][RED] == "valid"
    assert cols["audit_0"][BLUE] == "spurious"


def test_unit_page_exemplars_task_deltas_lens_relevance_audit(client, explorer_atlases):
    a = explorer_atlases["a"]
    p = client.get("/api/atlas/demo/layer/detect/unit/0").json()
    ex = load_file(str(a / "exemplars" / "detect.safetensors"))
    assert p["top"]["ids"] == ex["top_ids"][RED, :16].tolist()
    assert p["top"]["vals"] == pytest.approx(ex["top_vals"][RED, :16].tolist(), rel=1e-4)
    assert p["bottom"]["ids"] == ex["bottom_ids"][RED, :16].tolist()
    # task i: explanations are exemplar ranks i, i+N, ... (N = 5, K = 4), the query rank N·K + i
    m = p["mis"]
    assert (m["n_tasks"], m["k_expl"]) == (5, 4) and len(m["tasks"]) == 5
    top, bottom = ex["top_ids"][RED].tolist(), ex["bottom_ids"][RED].tolist()
    for i, task in enumerate(m["tasks"]):
        assert task["pos_expl"] == [top[i + 5 * j] for j in range(4)] and task["pos_query"] == top[20 + i]
        assert task["neg_expl"] == [bottom[i + 5 * j] for j in range(4)] and task["neg_query"] == bottom[20 + i]
        # red exemplars against the seeded tie-break's draw of non-red ones
        dp = red_delta_pos(task["neg_expl"])
        q = colour(task["neg_query"])
        dn = hist_cos(q, "red") - np.mean([hist_cos(q, colour(e)) for e in task["neg_expl"]])
        assert task["delta_pos"] == pytest.approx(dp, abs=1e-4)
        assert task["delta_neg"] == pytest.approx(dn, abs=1e-4)
        assert task["p"] == pytest.approx(1 / (1 + np.exp(-(dp - dn) / 0.16)), rel=1e-4)
    assert m["value"] == pytest.approx(float(scores(a, "mis", "detect")[RED]), rel=1e-4) == m["recomputed"]
    layer_mis = scores(a, "mis", "detect")
    assert m["rank"] == 1 + int(np.sum(layer_mis > layer_mis[RED]))  # its place among the layer's scored units
    lens = p["lens"]
    assert lens["label"] == "red" and lens["concepts"][0]["concept"] == "red"
    assert [e["id"] for e in lens["examples"]] == top[:5]
    # most similar: the red unit of the pooled layer (same θ) and of the other atlas
    assert (lens["similar"]["atlas"][0]["layer"], lens["similar"]["atlas"][0]["unit"]) == ("pool", RED)
    assert lens["similar"]["atlas"][0]["cos"] == pytest.approx(1.0, abs=1e-4)
    peer = {g["atlas"]: g["units"] for g in lens["similar"]["peers"]}
    assert peer["demo-2"][0]["unit"] == RED and peer["demo-2"][0]["cos"] == pytest.approx(1.0, abs=1e-4)
    assert all(c["unit"] != RED for c in lens["similar"]["layer"])  # itself left out
    rel = p["relevance"]["classes"][0]
    assert (rel["class_name"], rel["rel_mean"], rel["rel_max"], rel["rank"]) == ("red", 0.4, 0.8, 1)
    audit = pd.read_parquet(next((a / "audit").glob("class0-*.parquet"))).set_index(["layer", "unit"])
    assert p["audits"][0]["verdict"] == audit.loc[("detect", RED), "verdict"] == "valid"
    assert p["audits"][0]["a_valid"] == pytest.approx(audit.loc[("detect", RED), "a_valid"], rel=1e-4)
    row = pd.read_parquet(a / "units.parquet").set_index(["layer", "unit"]).loc[("detect", RED)]
    assert p["stats"]["max"] == pytest.approx(float(row["max"]), rel=1e-4)
    # the red detector is exactly 0 on the 90 other images: its whole bottom list (k = 30) is one tie
    assert (p["stats"]["bottom_tied"], p["stats"]["top_tied"]) == (int(row["bottom_tied"]), int(row["top_tied"]))
    assert p["stats"]["bottom_tied"] == 30


def test_study_payload(client):
    d = client.get("/api/study/colours").json()
    assert d["title"] == "colour-study" and [e["name"] for e in d["entries"]] == ["rgb-grey", "rgb"]
    assert d["entries"][0]["atlas"] == "rgb-grey" and d["entries"][1]["error"] == "mis: out of memory"
    assert d["figures"] == ["figures/ranking.png"]
    assert client.get("/api/study/colours/figure/figures/ranking.png").content[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------- 404s
@pytest.mark.parametrize("path", [
    "/atlas/nope", "/atlas/demo/layer/nope", "/atlas/demo/layer/detect/unit/6", "/atlas/demo/layer/detect/unit/-1",
    "/atlas/demo/layer/detect/unit/x", "/study/nope"])
def test_pages_that_do_not_exist_are_404_pages(client, path):
    r = client.get(path)
    assert r.status_code == 404 and "<main id=\"app\">" in r.text  # the front end, which shows "Not found"


def test_api_404s_name_what_exists(client):
    r = client.get("/api/atlas/demo/layer/detect/unit/6")
    assert r.status_code == 404 and "units 0..5" in r.json()["error"]
    assert "demo, demo-2" in client.get("/api/atlas/nope").json()["error"]
    assert client.get("/api/atlas/demo/layer/nope").status_code == 404
    assert client.get("/api/atlas/demo/thumb/120").status_code == 404  # 120 samples: ids 0..119
    assert client.get("/api/atlas/demo/thumb/abc").status_code == 404
    assert client.get("/api/atlas/demo/figure/nope.png").status_code == 404
    assert client.get("/api/atlas/demo/layer/detect/unit/0").status_code == 200
    assert client.get("/atlas/demo/layer/detect/unit/5").status_code == 200


# ---------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("path", [
    "/api/atlas/demo/figure/manifest.json", "/api/atlas/demo/figure/..%2Fmanifest.json",
    "/api/atlas/demo/figure/figures%2F..%2F..%2F..%2Fdata%2Fred%2Fred_0.png",
    "/api/atlas/demo/figure/%2e%2e/%2e%2e/etc/passwd", "/static/..%2Fserver.py", "/static/%2e%2e/server.py",
    "/api/study/colours/figure/..%2Fstudy.json", "/api/study/colours/figure/atlases/rgb/manifest.json"])
def test_no_path_traversal(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert b"config" not in r.content and b"def create_app" not in r.content and b"root:" not in r.content


def test_no_symlink_escapes(explorer_atlases, tmp_path):
    atlas = tmp_path / "linked"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(secret / "secret.png")
    (secret / "0.jpg").write_bytes(b"secret thumbnail")
    os.symlink(secret / "secret.png", atlas / "figures" / "escape.png")
    os.symlink(secret, atlas / "figures" / "outside")
    thumbs = atlas / "explorer" / "thumbs" / "128"
    thumbs.mkdir(parents=True)
    os.symlink(secret, thumbs / "0000")  # a planted cache folder that points out of the atlas
    with TestClient(create_app(Catalog([atlas]))) as c:
        o = c.get("/api/atlas/linked").json()
        assert o["figures"] == ["figures/mis_by_layer.png"]
        for name in ("figures/escape.png", "figures/outside/secret.png"):
            assert c.get(f"/api/atlas/linked/figure/{name}").status_code == 404
        r = c.get("/api/atlas/linked/thumb/0")
        assert r.status_code == 200 and r.content != b"secret thumbnail" and r.content[:2] == b"\xff\xd8"
    assert sorted(p.name for p in secret.iterdir()) == ["0.jpg", "secret.png"]  # nothing written through the link
    assert (secret / "0.jpg").read_bytes() == b"secret thumbnail"


def test_thumbnails_are_cached_in_the_atlas_with_caching_headers(explorer_atlases, tmp_path):
    atlas = tmp_path / "thumbs"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    with TestClient(create_app(Catalog([atlas]))) as c:
        r = c.get("/api/atlas/thumbs/thumb/95")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
        cached = atlas / "explorer" / "thumbs" / "128" / "0000" / "95.jpg"
        assert cached.read_bytes() == r.content
        image = Image.open(io.BytesIO(r.content))
        assert max(image.size) == 32 and image.getpixel((16, 16))[0] > 180  # a red sample, no larger than it was
        again = c.get("/api/atlas/thumbs/thumb/95", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and not again.content
        full = c.get("/api/atlas/thumbs/image/95")
        path = pd.read_parquet(atlas / "samples.parquet").set_index("id").loc[95, "path"]
        assert full.content == Path(path).read_bytes() and "/red/" in path


def test_unit_payload_carries_the_thumbnails_at_hand_and_makes_none(explorer_atlases, tmp_path):
    atlas = tmp_path / "inline"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    thumbs = atlas / "explorer" / "thumbs"
    with TestClient(create_app(Catalog([atlas]))) as c:
        first = c.get("/api/atlas/inline/layer/detect/unit/0").json()
        assert first["thumbs"] == {} and not thumbs.exists()  # nothing cached yet, and the payload made nothing
        shown = first["top"]["ids"][:3] + first["bottom"]["ids"][:2]
        made = {i: c.get(f"/api/atlas/inline/thumb/{i}").content for i in shown}
        assert len(list(thumbs.rglob("*.jpg"))) == len(set(shown))
        p = c.get("/api/atlas/inline/layer/detect/unit/0").json()
        assert set(p["thumbs"]) == {str(i) for i in shown}
        for i, data in made.items():
            prefix, _, body = p["thumbs"][str(i)].partition(",")
            assert prefix == "data:image/jpeg;base64" and base64.b64decode(body) == data
        assert len(list(thumbs.rglob("*.jpg"))) == len(set(shown))


def encode_uri_component(text: str) -> str:
    """ECMAScript's encodeURIComponent: every UTF-8 byte outside A-Z a-z 0-9 - _ . ! ~ * ' ( ) as %XX."""
    keep = set(string.ascii_letters + string.digits + "-_.!~*'()")
    return "".join(ch if ch in keep else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


def test_pages_preload_the_data_their_view_fetches_first(client):
    links = {path: re.findall(r'<link rel="preload" href="([^"]+)" as="fetch" crossorigin="anonymous">',
                              client.get(path).text)
             for path in ("/", "/atlas/demo", "/atlas/demo/layer/detect", "/atlas/demo/layer/detect/unit/3")}
    assert links == {"/": [], "/atlas/demo": ["/api/atlas/demo"],
                     "/atlas/demo/layer/detect": ["/api/atlas/demo/layer/detect"],
                     "/atlas/demo/layer/detect/unit/3": ["/api/atlas/demo/layer/detect/unit/3"]}
    odd = "".join(chr(c) for c in range(33, 127)) + " é"
    assert html.unescape(preload_link(("atlas", odd)).split('"')[3]) == "/api/atlas/" + encode_uri_component(odd)


def test_a_missing_image_is_a_404_not_a_traceback(explorer_atlases, tmp_path):
    atlas, data = tmp_path / "moved", tmp_path / "data"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    shutil.copytree(explorer_atlases["data"], data)
    samples = pd.read_parquet(atlas / "samples.parquet")
    samples["path"] = [str(data / Path(p).relative_to(explorer_atlases["data"])) for p in samples["path"]]
    samples.to_parquet(atlas / "samples.parquet")
    manifest = json.loads((atlas / "manifest.json").read_text())
    manifest["dataset"]["root"] = str(data)  # the images moved with the atlas's record of where they are
    (atlas / "manifest.json").write_text(json.dumps(manifest))
    Path(samples.loc[samples["id"] == 95, "path"].iloc[0]).unlink()
    with TestClient(create_app(Catalog([atlas]))) as c:
        for route in ("thumb", "image"):
            r = c.get(f"/api/atlas/moved/{route}/95")
            assert r.status_code == 404 and "95" in r.json()["error"]
        assert c.get("/api/atlas/moved/thumb/94").status_code == 200
        assert c.get("/api/atlas/moved/layer/detect/unit/0").status_code == 200


def served_copy(explorer_atlases, tmp_path, path_of_0: str, recorded_root: bool = True, hashed: bool = True) -> Path:
    """A copy of atlas a whose samples.parquet names ``path_of_0`` as sample 0 (an atlas recorded before the
    dataset root was kept: ``recorded_root=False``; one recorded with --no-content-hash: ``hashed=False``)."""
    atlas = tmp_path / "served"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    samples = pd.read_parquet(atlas / "samples.parquet")
    samples.loc[samples["id"] == 0, "path"] = path_of_0
    if not hashed:
        samples = samples.drop(columns=["file_bytes", "file_mtime_ns", "file_ctime_ns", "content_hash"])
    samples.to_parquet(atlas / "samples.parquet")
    manifest = json.loads((atlas / "manifest.json").read_text())
    assert manifest["dataset"]["root"] == str(explorer_atlases["data"])  # recorded by the record pass
    if not recorded_root:
        del manifest["dataset"]["root"]
    (atlas / "manifest.json").write_text(json.dumps(manifest))
    return atlas


@pytest.mark.parametrize("recorded_root", [True, False])
@pytest.mark.parametrize("target", ["/etc/passwd", "outside", "other bytes", "link out"])
def test_only_the_datasets_own_images_are_served(explorer_atlases, tmp_path, target, recorded_root):
    private = tmp_path / "private"
    private.mkdir()
    secret = png((1, 2, 3))
    (private / "secret.png").write_bytes(secret)
    blue_0 = explorer_atlases["data"] / "blue" / "blue_0.png"  # sample 0 as recorded
    paths = {"/etc/passwd": "/etc/passwd", "outside": str(private / "secret.png"),
             "other bytes": str(explorer_atlases["data"] / "red" / "red_5.png")}
    if target == "link out":  # a link inside the dataset folder that leads to a private image
        link = explorer_atlases["data"] / "blue" / f"link_{tmp_path.name}.png"
        os.symlink(private / "secret.png", link)
        paths[target] = str(link)
    try:
        atlas = served_copy(explorer_atlases, tmp_path, paths[target], recorded_root)
        with TestClient(create_app(Catalog([atlas]))) as c:
            for route in ("image", "thumb"):
                r = c.get(f"/api/atlas/served/{route}/0")
                assert r.status_code == 403, (route, r.status_code)
                assert "sample 0" in r.json()["error"] and "not served" in r.json()["error"]
                assert b"root:" not in r.content and secret not in r.content and r.content[:2] != b"\xff\xd8"
            assert c.get("/api/atlas/served/image/1").content == (blue_0.parent / "blue_1.png").read_bytes()
            assert c.get("/api/atlas/served/thumb/1").status_code == 200
    finally:
        if target == "link out":
            link.unlink()
    assert not (atlas / "explorer" / "thumbs" / "128" / "0000" / "0.jpg").exists()
    if target == "/etc/passwd" and recorded_root:  # the static report leaves the thumbnail out and says so
        r = write_report([atlas], tmp_path / "report", layers="pool", progress=False)
        assert any("1 thumbnail(s) left out" in n and "sample 0" in n for n in r.notes), r.notes
        assert not (tmp_path / "report" / "img" / "served" / "0.jpg").exists()


def test_an_atlas_without_content_hashes_serves_only_inside_its_dataset_folder(explorer_atlases, tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.png").write_bytes(png((1, 2, 3)))
    for path, status in (("/etc/passwd", 403), (str(private / "secret.png"), 403),
                         (str(explorer_atlases["data"] / "red" / "red_5.png"), 200)):  # one of its images
        atlas = served_copy(explorer_atlases, tmp_path / path.replace("/", "_"), path, hashed=False)
        with TestClient(create_app(Catalog([atlas]))) as c:
            r = c.get("/api/atlas/served/image/0")
            assert r.status_code == status, (path, r.status_code)
            assert status == 403 or (r.content == Path(path).read_bytes() and r.headers["content-type"] == "image/png")


def raw_get(url: str, host: str) -> tuple[int, bytes]:
    """GET ``url`` with this ``Host`` header, as a browser sends it for a page whose name resolves to the server."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/catalog", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_requests_for_another_host_are_refused(explorer_atlases):
    from unitlens.explorer.server import BackgroundServer

    app = create_app(Catalog([explorer_atlases["a"]]))
    with BackgroundServer(app) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
            status, body = raw_get(url, host)
            assert status == 200 and b"demo" in body, host
        for host in (f"evil.example:{port}", f"localhost.evil.example:{port}", "evil.example", f"localhost:{port + 1}",
                     "localhost", f"10.1.2.3:{port}", "", f"127.0.0.1:{port}x", f"[::1]x:{port}"):
            status, body = raw_get(url, host)
            assert status == 403 and b"demo" not in body, host
            assert f"http://127.0.0.1:{port}/" in json.loads(body)["error"]


def test_a_named_host_is_answered_too():
    from unitlens.explorer.hosts import HostCheck

    check = HostCheck(lambda *a: None, names=("explorer.lab",))
    scope = {"type": "http", "server": ("192.168.1.5", 8765)}  # bound to 0.0.0.0: the interface asked
    for host, ok in (("explorer.lab:8765", True), ("192.168.1.5:8765", True), ("localhost:8765", True),
                     ("evil.example:8765", False), ("explorer.lab:80", False)):
        assert check.answers({**scope, "headers": [(b"host", host.encode())]})[0] == ok, host


@pytest.mark.parametrize("path", ["/api/atlas/demo/layer/detect/unit/²", "/api/atlas/demo/thumb/²",
                                  "/api/atlas/demo/image/²", "/api/atlas/demo/layer/detect/unit/١",
                                  "/atlas/demo/layer/detect/unit/²"])
def test_non_ascii_digits_are_404s(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert "<main id=\"app\">" in r.text if path.startswith("/atlas") else "is not a" in r.json()["error"]


@pytest.mark.parametrize("body", [{"text": "red", "layers": 5}, {"text": "red", "layers": [1]},
                                  {"text": "red", "layers": {"a": 1}}, {"text": "red", "top": "x"},
                                  {"text": "red", "top": "²"}, {"text": "red", "top": -1},
                                  {"text": "red", "layers": ["nope"]}])
def test_bad_search_fields_are_400s(client, body):
    r = client.post("/api/atlas/demo/search", json=body)
    assert r.status_code == (404 if body.get("layers") == ["nope"] else 400) and r.json()["error"]
    field = "layers" if "layers" in body else "top"
    assert field in r.json()["error"] or "nope" in r.json()["error"]


def test_bad_label_layers_and_upload_top_are_400s(client):
    r = client.post("/api/atlas/demo/label", json={"concepts": ["red"], "layers": 7})
    assert r.status_code == 400 and "layers" in r.json()["error"]
    up = client.post("/api/atlas/demo/search/image", files=[("image", ("g.png", png((128, 128, 128)), "image/png"))],
                     data={"top": "²"})
    assert up.status_code == 400 and "top" in up.json()["error"]
    ok = client.post("/api/atlas/demo/search", json={"text": "red", "layers": "detect", "top": 2}).json()
    assert [(h["layer"], h["unit"]) for h in ok["results"]] == [("detect", RED), ("detect", SUM)] or \
        [h["layer"] for h in ok["results"]] == ["detect", "detect"]


def test_a_damaged_lens_layer_breaks_only_its_own_unit_pages(explorer_atlases, tmp_path):
    atlas = tmp_path / "damaged"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    [pool_file] = [p for p in (atlas / "lens").rglob("*.safetensors") if "pool" in p.name]
    pool_file.write_bytes(pool_file.read_bytes()[:100])  # truncated
    with TestClient(create_app(Catalog([atlas]))) as c:
        for u in range(6):
            page = c.get(f"/api/atlas/damaged/layer/detect/unit/{u}")
            assert page.status_code == 200, page.text
            p = page.json()
            assert p["lens"]["backend"] and p["lens"]["similar"]["atlas"] == []  # pool left out
            assert any("pool" in n and pool_file.name in n for n in p["notes"])
        broken = c.get("/api/atlas/damaged/layer/pool/unit/0")
        assert broken.status_code >= 400 and pool_file.name in broken.json()["error"]
        assert c.get("/api/atlas/damaged/layer/detect").status_code == 200
        assert c.get("/api/atlas/damaged").status_code == 200


# ---------------------------------------------------------------------------------------------- live lens
def test_text_and_image_search_and_labels(client):
    r = client.post("/api/atlas/demo/search", json={"text": "red", "top": 4}).json()
    assert [(h["layer"], h["unit"]) for h in r["results"][:2]] == [("detect", RED), ("pool", RED)]
    assert r["results"][0]["a"] > r["results"][2]["a"] and r["probe"]["kind"] == "text"
    grey = png(COLOURS["grey"])
    upload = client.post("/api/atlas/demo/search/image", files=[("image", ("g.png", grey, "image/png"))])
    assert upload.status_code == 200
    assert (upload.json()["results"][0]["unit"], upload.json()["probe"]["kind"]) == (GREY, "image")
    labels = client.post("/api/atlas/demo/label", json={"concepts": ["red", "green", "blue", "", "red"]}).json()
    counts = {c["concept"]: c["units"] for c in labels["concepts"]}
    assert counts == {"red": 2, "green": 2, "blue": 2, "none": 4}  # grey and the sum unit match none of these
    assert {(b["layer"], b["unit"]) for b in labels["concepts"][0]["best"]} == {("detect", RED), ("pool", RED)}


def test_bad_uploads_and_searches(client):
    text = client.post("/api/atlas/demo/search/image", files=[("image", ("a.txt", b"not an image", "text/plain"))])
    assert text.status_code == 400 and "not an image" in text.json()["error"] and "a.txt" in text.json()["error"]
    empty = client.post("/api/atlas/demo/search/image", files=[("image", ("e.png", b"", "image/png"))])
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    huge = client.post("/api/atlas/demo/search/image",
                       files=[("image", ("h.png", b"\0" * (MAX_UPLOAD_BYTES + 1), "image/png"))])
    assert huge.status_code == 413 and "MiB" in huge.json()["error"]
    none = client.post("/api/atlas/demo/search/image", data={"other": "x"})
    assert none.status_code == 400 and "'image'" in none.json()["error"]
    assert client.post("/api/atlas/demo/search", json={"text": "  "}).status_code == 400
    assert client.post("/api/atlas/demo/search", json={}).status_code == 400
    garbled = client.post("/api/atlas/demo/search", content=b"{not json", headers={"content-type": "application/json"})
    assert garbled.status_code == 400 and "could not be read" in garbled.json()["error"]
    assert client.post("/api/atlas/demo/label", json={"concepts": []}).status_code == 400
    assert client.post("/api/atlas/nope/search", json={"text": "red"}).status_code == 404


def test_search_without_a_lens_names_the_command(explorer_atlases, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(explorer_atlases["a"], bare, ignore=shutil.ignore_patterns("lens"))
    with TestClient(create_app(Catalog([bare]))) as c:
        r = c.post("/api/atlas/bare/search", json={"text": "red"})
        assert r.status_code == 409 and "unitlens lens embed" in r.json()["error"]
        assert any("unitlens lens embed" in n for n in c.get("/api/atlas/bare").json()["notes"])
        assert c.get("/api/atlas/bare/layer/detect/map").status_code == 409


def test_an_unfinished_atlas_says_how_to_resume(explorer_atlases, tmp_path):
    atlas = tmp_path / "unfinished"
    shutil.copytree(explorer_atlases["a"], atlas)
    manifest = json.loads((atlas / "manifest.json").read_text())
    (atlas / "manifest.json").write_text(json.dumps({**manifest, "status": "recording"}))
    with TestClient(create_app(Catalog([atlas]))) as c:
        assert "has not finished" in c.get("/api/atlas/unfinished").json()["notes"][0]
        r = c.get("/api/atlas/unfinished/layer/detect")
        assert r.status_code == 409 and "unitlens record" in r.json()["error"]


# ---------------------------------------------------------------------------------------------- read-only
def snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_server_writes_nothing_into_an_atlas_but_its_cache(explorer_atlases, tmp_path):
    atlas = tmp_path / "ro"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    before = snapshot(atlas)
    with TestClient(create_app(Catalog([atlas]))) as c:
        assert c.get("/api/atlas/ro").status_code == 200
        for layer in ("detect", "pool"):
            assert c.get(f"/api/atlas/ro/layer/{layer}").status_code == 200
            assert c.get(f"/api/atlas/ro/layer/{layer}/map").status_code == 200
            for u in range(6):
                assert c.get(f"/api/atlas/ro/layer/{layer}/unit/{u}").status_code == 200
        for sid in (0, 50, 119):
            assert c.get(f"/api/atlas/ro/thumb/{sid}").status_code == 200
            assert c.get(f"/api/atlas/ro/image/{sid}").status_code == 200
        assert c.get("/api/atlas/ro/figure/figures/mis_by_layer.png").status_code == 200
        assert c.post("/api/atlas/ro/search", json={"text": "green"}).status_code == 200
        assert c.post("/api/atlas/ro/search/image", files=[("image", ("r.png", png((225, 30, 30)), "image/png"))]) \
            .status_code == 200
        assert c.post("/api/atlas/ro/label", json={"concepts": ["red", "green"]}).status_code == 200
    after = snapshot(atlas)
    assert {k: v for k, v in after.items() if not k.startswith("explorer/")} == before
    new = sorted(k for k in after if k not in before)
    assert new and all(k.startswith("explorer/thumbs/") or k.startswith("explorer/maps/") for k in new)
    assert not list(atlas.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- running
def test_a_port_in_use_is_a_clear_error(explorer_atlases):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(BadInput, match=f"port {port} on 127.0.0.1 is already in use.*--port"):
            listen("127.0.0.1", port)
        result = runner.invoke(cli, ["serve", str(explorer_atlases["a"]), "--port", str(port)])
        assert result.exit_code == 2 and "already in use" in result.output
    finally:
        taken.close()
    with pytest.raises(BadInput, match="--host"):
        listen("no-such-host.invalid", 0)


# ---------------------------------------------------------------------------------------------- static report
def read_script(path) -> tuple[str, object]:
    text = path.read_text()
    assert text.startswith("UNITLENS_PUT(") and text.endswith(");\n")
    key, _, body = text[len("UNITLENS_PUT("):-3].partition(",")
    return json.loads(key), json.loads(body)


def test_static_report(explorer_atlases, tmp_path):
    out = tmp_path / "report"
    before = snapshot(explorer_atlases["b"])
    r = write_report([explorer_atlases["a"], explorer_atlases["b"], explorer_atlases["study"]], out, progress=False)
    assert (r.atlases, r.layers, r.units) == (4, 8, 44)
    catalog = json.loads((out / "data" / "catalog.js").read_text().removeprefix("window.UNITLENS_STATIC = ")[:-2])
    assert catalog["mode"] == "static" and not catalog["live"]
    key, pages = read_script(out / catalog["files"]["atlas/demo/layer/detect/units"])
    assert key == "atlas/demo/layer/detect/units" and [p["unit"] for p in pages] == list(range(6))
    task = pages[RED]["mis"]["tasks"][0]
    assert len(pages[RED]["mis"]["tasks"]) == 1
    assert task["delta_pos"] == pytest.approx(red_delta_pos(task["neg_expl"]), abs=1e-4)
    needed = set(pages[RED]["top"]["ids"]) | set(pages[RED]["mis"]["tasks"][0]["neg_expl"])
    assert all((out / "img" / "demo" / f"{i}.jpg").is_file() for i in needed)
    assert (out / "figures" / "demo" / "figures" / "mis_by_layer.png").is_file()
    assert (out / "figures" / "study" / "colours" / "figures" / "ranking.png").is_file()
    html = (out / "index.html").read_text()
    assert '<script src="data/catalog.js"></script>' in html and "<base" not in html and "http" not in html
    assert (out / "static" / "app.js").is_file()
    assert snapshot(explorer_atlases["b"]).keys() - before.keys() <= {k for k in snapshot(explorer_atlases["b"])
                                                                      if k.startswith("explorer/")}
    again = write_report([explorer_atlases["a"]], out, layers="detect", progress=False)  # over an earlier report
    assert again.layers == 1 and not (out / "img" / "demo-2").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("keep me")
    with pytest.raises(BadInput, match="not empty"):
        write_report([explorer_atlases["a"]], tmp_path / "busy", progress=False)
    with pytest.raises(BadInput, match="inside atlas"):
        write_report([explorer_atlases["a"]], explorer_atlases["a"] / "report", progress=False)


def test_report_command(explorer_atlases, tmp_path):
    result = runner.invoke(cli, ["report", str(explorer_atlases["a"]), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "12 unit pages" in result.output and (tmp_path / "r" / "index.html").is_file()
