"""The explorer in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright, against the live
server (uvicorn in a thread on a free local port) and the static report opened from ``file://``.

Run locally: ``apt-get install -y chromium`` (once), then ``pytest tests/test_explorer_browser.py``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from unitlens.explorer import BackgroundServer, Catalog, create_app, write_report

from conftest import COLOURS

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Chromium: apt-get install -y chromium")
LOADED = "sel => { const imgs = [...document.querySelectorAll(sel)]; " \
         "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(explorer_atlases):
    catalog = Catalog([explorer_atlases["a"], explorer_atlases["b"], explorer_atlases["study"]])
    with BackgroundServer(create_app(catalog)) as url:
        yield url


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport={"width": 1300, "height": 1000})
    p.errors = []
    p.on("pageerror", lambda err: p.errors.append(str(err)))
    yield p
    assert p.errors == []  # no JavaScript error on any page
    p.close()


def wait_view(page, view: str) -> None:
    page.wait_for_selector(f"#app[data-view={view}]", timeout=30000)


def best_mis_unit(atlas, layer: str) -> int:
    table = pd.read_parquet(atlas / "scores.parquet")
    rows = table[(table["metric"] == "mis") & (table["layer"] == layer)].dropna(subset=["value"])
    return int(rows.sort_values(["value", "unit"], ascending=[False, True])["unit"].iloc[0])


def open_layer_sort_and_top_unit(page, atlas) -> None:
    """From an atlas overview: open layer detect, sort by MIS, open the top unit, check its images."""
    page.click("table.layers a:text-is('detect')")
    wait_view(page, "layer")
    page.select_option("#sort", "mis")
    best = best_mis_unit(atlas, "detect")
    first = page.locator("#unit-grid .card").first
    assert first.get_attribute("data-unit") == str(best)
    first.click()
    wait_view(page, "unit")
    assert page.locator("h1").inner_text() == f"detect #{best}"
    page.wait_for_function(LOADED, arg="#top-exemplars img", timeout=30000)
    page.wait_for_function(LOADED, arg="#mis-task img", timeout=30000)
    sizes = page.eval_on_selector_all("#top-exemplars img", "els => els.map(e => e.naturalWidth)")
    assert len(sizes) == 16 and min(sizes) > 0
    assert "Δ⁺" in page.inner_text("#mis-task") and "picks q⁺" in page.inner_text("#mis-task")
    tied = pd.read_parquet(atlas / "units.parquet").set_index(["layer", "unit"]).loc[("detect", best), "bottom_tied"]
    assert f"{tied} bottom exemplars share the value" in page.inner_text("#tie-note")  # the seeded tie-break's work


def test_server_overview_layer_sort_unit(page, server, explorer_atlases):
    page.goto(server + "atlas/demo")
    wait_view(page, "overview")
    assert "12" in page.inner_text(".tiles") and page.locator("svg.mis-chart circle").count() == 2
    open_layer_sort_and_top_unit(page, explorer_atlases["a"])
    assert page.url == server + f"atlas/demo/layer/detect/unit/{best_mis_unit(explorer_atlases['a'], 'detect')}"
    page.go_back()  # the layer view keeps its sort
    wait_view(page, "layer")
    assert page.locator("#sort").input_value() == "mis"


def test_a_unit_page_typed_in_fetches_its_data_once_with_its_thumbnails(browser, explorer_atlases, tmp_path):
    atlas = tmp_path / "uncached"
    shutil.copytree(explorer_atlases["a"], atlas, ignore=shutil.ignore_patterns("explorer"))
    with BackgroundServer(create_app(Catalog([atlas]))) as server:
        check_unit_page_visits(browser, server + "atlas/uncached/layer/detect/unit/1", server)


def check_unit_page_visits(browser, url: str, server: str) -> None:
    for fresh in (True, False):  # the first visit makes the thumbnails; the second, in a new context, gets them inline
        context = browser.new_context(viewport={"width": 1300, "height": 1000})
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda r, seen=requests: seen.append(r.url))
        page.goto(url)
        wait_view(page, "unit")
        page.wait_for_function(LOADED, arg="#top-exemplars img", timeout=30000)
        sources = page.eval_on_selector_all("#top-exemplars img", "els => els.map(e => e.src)")
        shown = page.eval_on_selector_all("#top-exemplars img", "els => els.map(e => e.dataset.sample)")
        context.close()
        api = [r for r in requests if "/api/" in r]
        assert [r for r in api if "/unit/" in r] == [url.replace(server, server + "api/")]  # preloaded, fetched once
        assert [s.startswith("data:image/jpeg;base64,") for s in sources] == [not fresh] * 16
        fetched = {r.rsplit("/", 1)[1] for r in api if "/thumb/" in r}
        assert (set(shown) <= fetched) if fresh else not set(shown) & fetched


def test_text_search_then_open_the_first_result(page, server):
    page.goto(server + "atlas/demo/search")
    wait_view(page, "search")
    page.fill("#search-text", "red")
    page.click("#search-button")
    page.wait_for_selector("#search-results .card", timeout=30000)
    first = page.locator("#search-results .card").first
    assert (first.get_attribute("data-layer"), first.get_attribute("data-unit")) == ("detect", "0")
    first.click()
    wait_view(page, "unit")
    assert page.url == server + "atlas/demo/layer/detect/unit/0"
    assert "red" in page.inner_text("#lens")
    page.wait_for_function(LOADED, arg="#concept-examples img", timeout=30000)


def test_image_probe_and_concept_labels(page, server, tmp_path):
    Image.new("RGB", (24, 24), COLOURS["blue"]).save(tmp_path / "blue.png")
    page.goto(server + "atlas/demo/search")
    wait_view(page, "search")
    page.set_input_files("#search-images", str(tmp_path / "blue.png"))
    page.click("#image-button")
    page.wait_for_selector("#search-results .card", timeout=30000)
    assert page.locator("#search-results .card").first.get_attribute("data-unit") == "2"  # the blue detector
    page.fill("#concepts", "red\ngreen\nblue")
    page.click("#label-button")
    page.wait_for_selector("#label-results button.concept", timeout=30000)
    buttons = page.locator("#label-results button.concept").all_inner_texts()
    assert buttons[:3] == ["red · 2", "green · 2", "blue · 2"]
    page.locator("#label-results button.concept").first.click()
    assert page.locator("#label-results .card").count() == 2


def test_map_hover_shows_the_unit_and_click_opens_it(page, server):
    page.goto(server + "atlas/demo/layer/detect")
    wait_view(page, "layer")
    dot = page.locator("#theta-map circle[data-unit='2']")
    dot.wait_for(timeout=60000)
    dot.hover()
    assert page.locator("#tooltip").is_visible() and "#2" in page.inner_text("#tooltip")
    dot.click()
    wait_view(page, "unit")
    assert page.url.endswith("atlas/demo/layer/detect/unit/2")


def test_out_of_range_unit_is_a_404_page(browser, server):
    page = browser.new_page()
    response = page.goto(server + "atlas/demo/layer/detect/unit/99")
    assert response.status == 404
    wait_view(page, "notfound")
    assert "units 0..5" in page.inner_text(".error-page")
    page.close()


def test_study_view_links_to_its_atlases(page, server):
    page.goto(server + "study/colours")
    wait_view(page, "study")
    assert page.locator("svg.ranking circle").count() == 1  # one entry has an MIS mean
    assert "failed" in page.inner_text("table.study")
    page.click("table.study a:text-is('rgb-grey')")
    wait_view(page, "overview")
    assert page.url == server + "atlas/rgb-grey"


def test_static_report_from_file_url(page, explorer_atlases, tmp_path):
    out = tmp_path / "report"
    write_report([explorer_atlases["a"], explorer_atlases["study"]], out, progress=False)
    index = (out / "index.html").resolve().as_uri()
    page.goto(index)
    wait_view(page, "home")
    page.click(".atlas-list a[href='#/atlas/demo']")
    wait_view(page, "overview")
    open_layer_sort_and_top_unit(page, explorer_atlases["a"])
    assert page.url.startswith("file://") and "#/atlas/demo/layer/detect/unit/" in page.url
    page.goto(index + "#/atlas/demo/search")
    wait_view(page, "search")
    assert "unitlens serve" in page.inner_text("#app") and page.locator("#search-text").count() == 0
    page.goto(index + "#/atlas/demo/layer/detect/unit/99")
    wait_view(page, "notfound")
    page.goto(index + "#/study/colours")
    wait_view(page, "study")
    page.wait_for_function(LOADED, arg=".figures img", timeout=30000)
