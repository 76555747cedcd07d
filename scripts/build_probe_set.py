"""A labelled probe set for ``unitlens probe`` from Debian's ``openclipart-png``, without the bundled demo images.

Every distinct image of the package (paths with the same bytes are one image, kept under its first path) whose
bytes are not those of a demo image's source is rendered as the demo set is (``build_demo.render``: on white,
padded square, 160 px JPEG) to ``OUT/images/<category>/<sub-folders>__<stem>.jpg``, and listed in ``OUT/probe.csv``
with two concept columns:

- ``category``: the top folder (the 22 demo categories);
- ``subcategory``: ``<category>/<first sub-folder>`` where that sub-folder holds at least ``--min-images`` of the
  chosen images (finer concepts; blank otherwise, so the image belongs to no sub-category concept).

``--per-category N`` keeps at most N images of each category (the first by SHA-1 of their path, as the demo set
picks), which balances the package's mix (a third of it is ``computer`` icons and ``shapes``) and bounds the cost.

``--demo`` lists the bundled demo images instead (no package needed; the same two columns): a probe set with all 22
categories, but made of the images the demo atlas was recorded on.

Run from the repository root::

    python scripts/build_probe_set.py --out /tmp/probe [--deb FILE | --source DIR] [--per-category 150]
    python scripts/build_probe_set.py --out /tmp/probe-demo --demo
    unitlens probe ATLAS --data /tmp/probe/probe.csv --columns category,subcategory
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_demo  # noqa: E402  (scripts/ is not a package)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_INDEX = REPO_ROOT / "src" / "unitlens" / "data" / "demo" / "index.csv"


def digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def distinct_images(png_root: Path) -> dict[str, list[str]]:
    """Content digest -> the sorted relative paths that hold those bytes."""
    images: dict[str, list[str]] = {}
    for rel in build_demo.enumerate_pngs(png_root):
        images.setdefault(digest(png_root / rel), []).append(rel)
    return images


def demo_digests(png_root: Path) -> set[str]:
    with DEMO_INDEX.open(encoding="utf-8") as fh:
        sources = [row["source"] for row in csv.DictReader(fh)]
    return {digest(png_root / s) for s in sources if (png_root / s).is_file()}


def _render(args: tuple[str, str]) -> tuple[str, bytes | None]:
    root, rel = args
    try:
        return rel, build_demo.render(Path(root) / rel, build_demo.DEFAULT_SIZE, build_demo.DEFAULT_QUALITY)
    except Exception:  # noqa: BLE001 - undecodable or over Pillow's pixel limit: skipped and counted
        return rel, None


def write_csv(out: Path, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "probe.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "category", "subcategory"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def demo_rows(min_images: int) -> list[dict]:
    """The bundled demo images (absolute paths) with their category and first sub-folder."""
    with DEMO_INDEX.open(encoding="utf-8") as fh:
        index = list(csv.DictReader(fh))
    subs = [f"{r['category']}/{r['subcategory'].split('/')[0]}" if r["subcategory"] else "" for r in index]
    sizes = Counter(s for s in subs if s)
    return [{"path": str((DEMO_INDEX.parent / r["path"]).resolve()), "category": r["category"],
             "subcategory": s if sizes[s] >= min_images else ""} for r, s in zip(index, subs)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deb", type=Path, help="openclipart-png .deb (default: apt-get download it)")
    parser.add_argument("--source", type=Path, help="an extracted package or its png folder")
    parser.add_argument("--min-images", type=int, default=20, help="smallest sub-category kept as a concept")
    parser.add_argument("--per-category", type=int, default=0, help="at most this many images per category (0: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--demo", action="store_true", help="list the bundled demo images instead")
    args = parser.parse_args(argv)
    if args.demo:
        rows = demo_rows(args.min_images)
        write_csv(args.out, rows)
        print(f"wrote {len(rows)} demo images, {len({r['subcategory'] for r in rows if r['subcategory']})} "
              f"sub-categories with >= {args.min_images} images -> {args.out / 'probe.csv'}")
        return
    work = Path(tempfile.mkdtemp(prefix="probe-set-"))
    if args.source:
        png_root = build_demo.find_png_root(args.source)
    else:
        deb = args.deb or build_demo.download_deb(work)
        png_root = build_demo.find_png_root(build_demo.extract_deb(deb, work / "root"))
    images = distinct_images(png_root)
    demo = demo_digests(png_root)
    keep = sorted(paths[0] for d, paths in images.items() if d not in demo)
    items = {rel: build_demo.make_item(rel) for rel in keep}
    if args.per_category:
        by_category: dict[str, list[str]] = {}
        for rel in sorted(keep, key=build_demo.sha1_rank):
            by_category.setdefault(items[rel].category, []).append(rel)
        keep = sorted(rel for rels in by_category.values() for rel in rels[: args.per_category])
    print(f"{len(images)} distinct images, {len(demo)} of them demo images; rendering {len(keep)}")
    subs = {rel: f"{items[rel].category}/{items[rel].subcategory.split('/')[0]}" if items[rel].subcategory else ""
            for rel in keep}
    sizes = Counter(s for s in subs.values() if s)
    rows, failed = [], 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for rel, data in pool.map(_render, [(str(png_root), r) for r in keep], chunksize=16):
            if data is None:
                failed += 1
                continue
            out = args.out / items[rel].out_path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            sub = subs[rel] if sizes[subs[rel]] >= args.min_images else ""
            rows.append({"path": items[rel].out_path, "category": items[rel].category, "subcategory": sub})
    write_csv(args.out, rows)
    kept_subs = sorted({r["subcategory"] for r in rows if r["subcategory"]})
    print(f"wrote {len(rows)} images ({failed} unreadable skipped), {len({r['category'] for r in rows})} categories, "
          f"{len(kept_subs)} sub-categories with >= {args.min_images} images -> {args.out / 'probe.csv'}")


if __name__ == "__main__":
    main()
