"""Feature visualisations in the explorer, in a real browser (headless Chromium driven by Playwright): a unit page
shows them beside the exemplars with both MIS values, the layer view can use them as thumbnails, in the live server
and in the static report opened from ``file://``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_explorer_browser import ARGS, CHROMIUM, LOADED, sync_api  # skips this module without playwright
from test_featviz import FAST, PixelBackend, tiny_atlas
from unitlens.explorer import BackgroundServer, Catalog, create_app, write_report

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Chromium: apt-get install -y chromium")


@pytest.fixture(scope="module")
def atlas_with_featviz(tmp_path_factory):
    from unitlens.atlas import Atlas
    from unitlens.featviz import featviz_atlas, score_featviz
    from unitlens.mis import score_mis

    base = tiny_atlas(tmp_path_factory.mktemp("browser"))
    path = shutil.copytree(base["atlas"], base["atlas"].parent / "demo")
    backend = PixelBackend.build()
    featviz_atlas(path, layers=["conv"], units="0-2", model=base["model"], **FAST)
    score_mis(path, backend=backend, n_tasks=2, k_expl=2, progress=False)
    score_featviz(path, backend=backend, n_tasks=2, k_expl=2, progress=False)
    return Atlas(path)


def check_pages(page, start: str, static: bool) -> None:
    sep = "#/" if static else "/"
    page.goto(f"{start}{sep}atlas/demo/layer/conv/unit/1")
    page.wait_for_selector("#app[data-view=unit]", timeout=30000)
    page.wait_for_function(LOADED, arg="#featviz-top img", timeout=30000)
    page.wait_for_function(LOADED, arg="#featviz-bottom img", timeout=30000)
    assert page.locator("#featviz-top img").count() == 2 and page.locator("#featviz-bottom img").count() == 2
    assert page.locator(".tile-label:text-is('MIS (visualisations)')").count() == 1
    page.goto(f"{start}{sep}atlas/demo/layer/conv")
    page.wait_for_selector("#app[data-view=layer]", timeout=30000)
    page.select_option("#thumb-kind", "featviz")
    first = page.locator("#unit-grid .card img").first
    assert "featviz" in first.get_attribute("src")
    page.wait_for_function(LOADED, arg="#unit-grid .card[data-unit='0'] img", timeout=30000)
    assert "featviz" not in page.locator("#unit-grid .card[data-unit='4'] img").get_attribute("src")  # none made


def test_visualisations_in_the_server_and_the_static_report(atlas_with_featviz, tmp_path):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        with BackgroundServer(create_app(Catalog([atlas_with_featviz.path]))) as url:
            check_pages(page, url.rstrip("/"), static=False)
        write_report([atlas_with_featviz.path], tmp_path / "report", progress=False)
        check_pages(page, (tmp_path / "report" / "index.html").as_uri(), static=True)
        browser.close()
    assert errors == []
