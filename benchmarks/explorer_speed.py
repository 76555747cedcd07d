"""How fast the explorer answers on a real atlas: API times and page loads in headless Chromium.

    python benchmarks/explorer_speed.py /tmp/explorer-demo/lite0 [--layer conv_head] [--unit-layer blocks.6.0.conv_pwl]

Targets (demo atlas of 97 layers / 41,984 units): overview and a 1,280-unit layer view load in < 1 s,
a unit page in < 300 ms once thumbnails exist, a text search answers in < 1 s with the backend loaded.

Runs the server as ``unitlens serve`` does, in its own process (``--in-process``: uvicorn in a thread of this one,
where it shares the interpreter with Playwright's client), and drives it with HTTP requests and with Chromium (a fresh
browser context per page load, so the browser cache never helps; a page counts as loaded when its view is drawn and
every image it shows has arrived). The baselines, timed in the same run: the first (cold) request of each kind,
with thumbnails still to be made, and the ``unitlens lens search`` command, which loads the backend every time.
The explorer's thumbnail cache of the atlas is cleared first (``--keep-cache`` keeps it).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from unitlens.explorer import BackgroundServer, Catalog, create_app

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
ALL_LOADED = "() => [...document.querySelectorAll('#app img')].filter(i => i.getBoundingClientRect().top < " \
             "innerHeight).every(i => i.complete && i.naturalWidth > 0)"
CONCEPTS = ["star", "tree", "bus", "pattern", "flag", "clock", "house"]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def page_load(browser, url: str, view: str, then=None) -> float:
    """Seconds from navigation to the view drawn with every visible image loaded (fresh context: no cache)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(f"#app[data-view={view}]", timeout=120000)
    if then is not None:
        start = then(page)
    page.wait_for_function(ALL_LOADED, timeout=120000, polling=20)
    seconds = time.perf_counter() - start
    context.close()
    return seconds


@contextlib.contextmanager
def server_process(atlas: Path):
    """``unitlens serve ATLAS`` on a free local port; yields its URL once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(Path(sys.executable).parent / "unitlens"), "serve", str(atlas), "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url, timeout=5).raise_for_status()
                break
            except httpx.HTTPError as err:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"unitlens serve did not start: {proc.stderr.read() if proc.stderr else ''}") \
                        from err
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def row(what: str, seconds: float, target: float | None = None, baseline: float | None = None) -> None:
    verdict = "" if target is None else ("  ok" if seconds < target else "  OVER")
    base = f"  baseline {baseline:7.3f} s  ratio {baseline / seconds:6.1f}x" if baseline else ""
    limit = f"  (target < {target:g} s)" if target else ""
    print(f"{what:58s} {seconds:7.3f} s{limit}{verdict}{base}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--layer", default="conv_head", help="the layer view timed (1,280 units on Lite0)")
    parser.add_argument("--unit-layer", default="blocks.6.0.conv_pwl", help="a lens-embedded layer for unit pages")
    parser.add_argument("--units", type=int, default=8, help="unit pages timed")
    parser.add_argument("--keep-cache", action="store_true", help="keep the explorer's thumbnail and map cache")
    parser.add_argument("--in-process", action="store_true", help="run the server in a thread of this process")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from unitlens.atlas import Atlas

    atlas = Atlas(args.atlas)
    if not args.keep_cache:
        shutil.rmtree(atlas.derived_path("explorer", "thumbs"), ignore_errors=True)
    print(f"atlas {args.atlas}: {atlas.manifest.n_units:,} units in {len(atlas.layers)} layers; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings on a shared machine are upper "
          "bounds)")
    catalog = Catalog([args.atlas])
    name = next(iter(catalog.atlases))
    view = catalog.atlas(name)
    n_layer = view.n_units(args.layer)
    server = BackgroundServer(create_app(catalog)) if args.in_process else server_process(args.atlas)
    print(f"server: {'a thread of this process' if args.in_process else 'unitlens serve, its own process'}")
    with server as url, httpx.Client(base_url=url, timeout=300) as http, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                                     args=ARGS)
        print("\nAPI (server side, HTTP round trip)")
        cold_overview, _ = timed(lambda: http.get(f"/api/atlas/{name}").raise_for_status())
        warm_overview = statistics.median(timed(lambda: http.get(f"/api/atlas/{name}"))[0] for _ in range(5))
        row("overview", warm_overview, 1.0, cold_overview)
        cold_layer, _ = timed(lambda: http.get(f"/api/atlas/{name}/layer/{args.layer}").raise_for_status())
        warm_layer = statistics.median(timed(lambda: http.get(f"/api/atlas/{name}/layer/{args.layer}"))[0]
                                       for _ in range(5))
        row(f"layer {args.layer} ({n_layer:,} units, all columns)", warm_layer, 1.0, cold_layer)
        unit_api = [timed(lambda u=u: http.get(f"/api/atlas/{name}/layer/{args.unit_layer}/unit/{u}")
                          .raise_for_status())[0] for u in range(args.units)]
        row(f"unit page data, first of layer {args.unit_layer}", unit_api[0])
        row(f"unit page data, median of {args.units - 1} other units", statistics.median(unit_api[1:]), 0.3)
        first_search, _ = timed(lambda: http.post(f"/api/atlas/{name}/search", json={"text": CONCEPTS[0]})
                                .raise_for_status())
        searches = [timed(lambda c=c: http.post(f"/api/atlas/{name}/search", json={"text": c}).raise_for_status())[0]
                    for c in CONCEPTS[1:]]
        cli = [str(Path(sys.executable).parent / "unitlens"), "lens", "search", str(args.atlas), CONCEPTS[0]]
        command, done = timed(lambda: subprocess.run(cli, capture_output=True, text=True))
        if done.returncode:
            print(done.stdout[-2000:], done.stderr[-2000:])
        row("text search, first (loads the backend)", first_search)
        row(f"text search, backend loaded (median of {len(searches)} concepts)", statistics.median(searches), 1.0,
            command)
        print(f"{'':58s} baseline: `unitlens lens search ATLAS {CONCEPTS[0]}` in a new process")

        print("\nPage loads in Chromium (view drawn and every visible image loaded; fresh context each)")
        for label, path, viewname in (("overview", f"atlas/{name}", "overview"),
                                      (f"layer {args.layer} ({n_layer:,} units, first page)",
                                       f"atlas/{name}/layer/{args.layer}", "layer")):
            cold = page_load(browser, url + path, viewname)
            warm = statistics.median(page_load(browser, url + path, viewname) for _ in range(3))
            row(label + " (thumbnails cached)", warm, 1.0, cold)
            print(f"{'':58s} baseline: the first load, thumbnails still to be made")
        units = range(args.units, 2 * args.units)
        for u in units:  # make their thumbnails first: the target is for pages whose thumbnails exist
            http.get(f"/api/atlas/{name}/layer/{args.unit_layer}/unit/{u}").raise_for_status()
            page_load(browser, url + f"atlas/{name}/layer/{args.unit_layer}/unit/{u}", "unit")
        loads = [page_load(browser, url + f"atlas/{name}/layer/{args.unit_layer}/unit/{u}", "unit") for u in units]
        row(f"unit page, new browser context (median of {len(loads)})", statistics.median(loads), 0.3)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(url + f"atlas/{name}/layer/{args.unit_layer}")
        page.wait_for_selector("#app[data-view=layer]", timeout=120000)
        clicks = []
        for u in units:  # a click on a card of the layer view, the app already loaded (no thumbnail in its cache)
            start = time.perf_counter()
            page.click(f"#unit-grid .card[data-unit='{u}']")
            page.wait_for_selector(f"#app[data-view=unit] h1:text-is('{args.unit_layer} #{u}')", timeout=120000)
            page.wait_for_function(ALL_LOADED, timeout=120000, polling=10)
            clicks.append(time.perf_counter() - start)
            page.go_back()
            page.wait_for_selector("#app[data-view=layer]", timeout=120000)
        context.close()
        row(f"unit page, clicked in the layer view (median of {len(clicks)})", statistics.median(clicks), 0.3)
        print(f"{'':58s} (thumbnails exist on the server; both include every visible image)")

        def search(page):
            page.fill("#search-text", CONCEPTS[1])
            start = time.perf_counter()
            page.click("#search-button")
            page.wait_for_selector("#search-results .card", timeout=60000)
            return start

        row("search page: type, submit, result cards with images", statistics.median(
            page_load(browser, url + f"atlas/{name}/search", "search", then=search) for _ in range(3)), 1.0)
        browser.close()


if __name__ == "__main__":
    main()
