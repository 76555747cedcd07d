"""Screenshots of the explorer's main views for the README (headless Chromium), and the small demo study they show.

    python scripts/explorer_screenshots.py ATLAS --study-atlas NAME=PATH [--study-atlas ...] [--out docs/figures]

ATLAS is the demo atlas (record + mis + lens embed/label/measures, see README); each ``--study-atlas`` is one more
atlas of the demo data (another model). The study folder (``<out-of-tree tmp>/explorer-demo-study``) is laid out as
``unitlens study run`` writes one: study.toml, study.json, study.parquet (one row per entry, from each atlas's stored
MIS through ``unitlens.mis``), atlases/<entry> (links) and figures/ (a ranking plot).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from unitlens.atlas import Atlas
from unitlens.explorer import BackgroundServer, Catalog, create_app
from unitlens.mis import load_scores
from unitlens.report.figures import new_figure, save_figure

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
EAGER = "() => { document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager'); }"
LOADED = "() => [...document.querySelectorAll('#app img')].every(i => i.complete && i.naturalWidth > 0)"


def make_study(entries: dict[str, Path], root: Path) -> Path:
    """A study folder over ``entries`` (name -> atlas) with the summary table and one figure."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "atlases").mkdir(parents=True)
    rows = []
    for name, path in entries.items():
        (root / "atlases" / name).symlink_to(Path(path).resolve())
        atlas = Atlas(path)
        mis = load_scores(atlas)
        scored = mis[mis["status"] == "scored"]
        worst = scored["mis"].nsmallest(max(1, len(scored) // 20))
        cfg = atlas.manifest["config"]
        rows.append({"name": name, "model": cfg["model"], "checkpoint": None, "epoch": None, "accuracy": None,
                     "layers": len(atlas.layers), "units": int(atlas.manifest["n_units"]),
                     "constant": int(atlas.manifest["n_constant"]), "mis_mean": float(scored["mis"].mean()),
                     "mis_p5": float(scored["mis"].quantile(0.05)), "mis_p95": float(scored["mis"].quantile(0.95)),
                     "mis_worst5_mean": float(worst.mean()), "mis_accuracy": float(scored["mis_accuracy"].mean())})
    table = pd.DataFrame(rows)
    table.to_parquet(root / "study.parquet")
    (root / "study.toml").write_text('name = "lite-demo"\ndata = "demo"\nsteps = ["record", "mis"]\n' +
                                     "".join(f'[[entry]]\nname = "{n}"\n' for n in entries))
    (root / "study.json").write_text(json.dumps({"entries": {n: {"steps": {"record": "done", "mis": "done"}}
                                                             for n in entries}}, indent=2))
    ranked = table.sort_values("mis_mean")
    fig = new_figure(6, 0.5 + 0.45 * len(ranked))
    ax = fig.add_subplot(1, 1, 1)
    ax.hlines(range(len(ranked)), ranked["mis_p5"], ranked["mis_p95"], color="#9bb5de", lw=6)
    ax.plot(ranked["mis_mean"], range(len(ranked)), "o", color="#2559a8")
    ax.set_yticks(range(len(ranked)), ranked["name"])
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
