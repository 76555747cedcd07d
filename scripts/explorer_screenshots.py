"""Screenshots of the explorer's main views for the README (headless Chromium), and the small demo study they show.

    python scripts/explorer_screenshots.py ATLAS --study-atlas NAME=PATH [--study-atlas ...] [--out docs/figures]

ATLAS is the demo atlas (record + mis + lens embed/label/measures, see README); each ``--study-atlas`` is one more
atlas of the demo data (another model). The study folder (``<out-of-tree tmp>/explorer-demo-study``) is laid out as
``unitlens study run`` writes one: study.toml, study.json, study.parquet (the stamped study table computed from each
atlas by ``unitlens.study.write_summary``), atlases/<entry> (links) and figures/ (a ranking plot).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from unitlens.atlas import Atlas
from unitlens.explorer import BackgroundServer, Catalog, create_app
from unitlens.report.figures import new_figure, save_figure
from unitlens.study import write_summary

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
EAGER = "() => { document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager'); }"
LOADED = "() => [...document.querySelectorAll('#app img')].every(i => i.complete && i.naturalWidth > 0)"


def make_study(entries: dict[str, Path], root: Path) -> Path:
    """A study folder over ``entries`` (name -> atlas) with the study table and one figure."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "atlases").mkdir(parents=True)
    records = []
    for name, path in entries.items():
        (root / "atlases" / name).symlink_to(Path(path).resolve())
        steps = {s: {"options": {}, "status": "done", "error": "", "seconds": 0.0, "result": {}}
                 for s in ("record", "mis")}
        records.append({"name": name, "model": Atlas(path).manifest.config.model, "data": "demo",
                        "atlas": f"atlases/{name}", "steps": steps})
    (root / "study.toml").write_text('name = "lite-demo"\ndata = "demo"\nsteps = ["record", "mis"]\n' +
                                     "".join(f'[[entry]]\nname = "{n}"\n' for n in entries))
    (root / "study.json").write_text(json.dumps({"format": 2, "name": "lite-demo", "entries": records}, indent=2))
    ranked = write_summary(root).sort_values("mis_mean")
    fig = new_figure(6, 0.5 + 0.45 * len(ranked))
    ax = fig.add_subplot(1, 1, 1)
    ax.hlines(range(len(ranked)), ranked["mis_p5"], ranked["mis_p95"], color="#9bb5de", lw=6)
    ax.plot(ranked["mis_mean"], range(len(ranked)), "o", color="#2559a8")
    ax.set_yticks(range(len(ranked)), ranked["entry"])
    ax.set_xlabel("MIS (mean, p5–p95 of the units)")
    save_figure(fig, root / "figures" / "mis_ranking.png")
    return root


def shoot(page, url: str, view: str, out: Path, full: bool = False, action=None, height: int | None = None) -> None:
    page.goto(url)
    page.wait_for_selector(f"#app[data-view={view}]", timeout=300000)
    if action is not None:
        action(page)
    page.evaluate(EAGER)
    page.wait_for_function(LOADED, timeout=300000)
    page.wait_for_timeout(300)
    if height is not None:
        page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height},
                        full_page=True)
    else:
        page.screenshot(path=str(out), full_page=full)
    print("wrote", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--study-atlas", action="append", default=[], help="NAME=PATH of another demo atlas")
    parser.add_argument("--layer", default="blocks.6.0.conv_pwl")
    parser.add_argument("--unit", type=int, default=None, help="unit page shown (default: the layer's best MIS)")
    parser.add_argument("--query", default="star")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    entries = {Path(args.atlas).name: args.atlas, **{s.split("=", 1)[0]: Path(s.split("=", 1)[1])
                                                      for s in args.study_atlas}}
    study = make_study(entries, Path(tempfile.gettempdir()) / "explorer-demo-study")
    catalog = Catalog([args.atlas, study])
    name = next(iter(catalog.atlases))
    layer = catalog.atlas(name).layer(args.layer)
    mis = layer["columns"].get("mis") or []
    unit = args.unit if args.unit is not None else max(range(len(mis)), key=lambda u: mis[u] or -1)
    args.out.mkdir(parents=True, exist_ok=True)
    with BackgroundServer(create_app(catalog)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", headless=True,
                                     args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        shoot(page, url + f"atlas/{name}", "overview", args.out / "explorer_overview.png", height=1500)

        def sort_by_mis(p):
            p.select_option("#sort", "mis")
            p.wait_for_selector("#theta-map svg", timeout=300000)

        shoot(page, url + f"atlas/{name}/layer/{args.layer}", "layer", args.out / "explorer_layer.png",
              action=sort_by_mis, height=1150)
        shoot(page, url + f"atlas/{name}/layer/{args.layer}/unit/{unit}", "unit", args.out / "explorer_unit.png",
              full=True)

        def search(p):
            p.fill("#search-text", args.query)
            p.click("#search-button")
            p.wait_for_selector("#search-results .card", timeout=300000)

        shoot(page, url + f"atlas/{name}/search", "search", args.out / "explorer_search.png", action=search,
              height=1000)
        shoot(page, url + f"study/{study.name}", "study", args.out / "explorer_study.png", full=True)
        browser.close()


if __name__ == "__main__":
    main()
