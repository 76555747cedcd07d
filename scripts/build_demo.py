#!/usr/bin/env python3
"""Build the bundled offline demo image set from Debian's ``openclipart-png``.

What
    Picks a category-balanced, deterministic sample of ~N clip-art images from
    the Debian package ``openclipart-png`` (Open Clip Art Library, released
    into the public domain), renders each onto a white square, downsizes it to
    ``--size`` x ``--size`` px and stores it as a small JPEG under
    ``<out>/images/<category>/<flattened_name>.jpg``.  It also writes
    ``<out>/index.csv`` (one row per image: path, category, subcategory,
    name_words, source) and ``<out>/SOURCE.md`` (provenance, processing,
    rebuild command, per-category counts).

Why
    unitlens needs a small image set that ships inside the wheel, so that the
    demo (``unitlens record --data demo``) and the tests run fully offline and
    without licence worries.  The 22 top-level openclipart folders give a
    coarse, human-meaningful label for every image, and the file names give a
    few words per image, which is what the unit-explanation code needs.  The
    source collection is heavily unbalanced (``buttons`` has 3 images,
    ``computer`` 2158), so the sample is balanced by water-filling: every
    category gets an equal quota, categories smaller than the quota contribute
    everything they have and the remainder is shared among the others.

Determinism
    No randomness is used: files are enumerated sorted by relative path, and
    within a category they are ranked by the SHA-1 of their relative path
    (which spreads the pick over sub-folders) and the first ``q`` that Pillow
    can open are taken.  Given the same package and the same Pillow/libjpeg,
    two runs produce byte-identical output.

Input
    ``--deb PATH``  a downloaded ``openclipart-png_*.deb`` (extracted with
                    ``dpkg -x`` into a temporary directory);
    ``--root DIR``  an already extracted tree: either the extraction root
                    (containing ``usr/share/openclipart/png``) or the ``png``
                    folder itself;
    neither         runs ``apt-get download openclipart-png`` in a temporary
                    directory and extracts it with ``dpkg -x``.  This needs the
                    Debian/Ubuntu package lists; run ``sudo apt-get update``
                    first if apt-get cannot find the package.

Usage
    python scripts/build_demo.py [--deb PATH | --root DIR]
        [--out src/unitlens/data/demo] [--n 1000] [--size 160] [--quality 85]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "unitlens" / "data" / "demo"
PACKAGE = "openclipart-png"
PNG_SUBDIR = Path("usr/share/openclipart/png")
DOC_SUBDIR = Path("usr/share/doc") / PACKAGE

DEFAULT_N = 1000
DEFAULT_SIZE = 160
DEFAULT_QUALITY = 85

WHITE = (255, 255, 255)
INDEX_COLUMNS = ("path", "category", "subcategory", "name_words", "source")
_WORD_SPLIT = re.compile(r"[_\-\s0-9]+")


# --------------------------------------------------------------------------
# Locating the source images
# --------------------------------------------------------------------------


def run_checked(cmd: list[str], cwd: Path | None = None) -> None:
    """Run ``cmd``; exit with a readable message if it fails."""
    try:
        subprocess.run(cmd, cwd=cwd, check=True)
    except FileNotFoundError:
        sys.exit(f"error: {cmd[0]!r} not found; is this a Debian/Ubuntu system?")
    except subprocess.CalledProcessError as exc:
        hint = " (try `sudo apt-get update` first)" if cmd[0] == "apt-get" else ""
        sys.exit(f"error: {' '.join(cmd)} failed with status {exc.returncode}{hint}")


def extract_deb(deb: Path, dest: Path) -> Path:
    """Extract ``deb`` into ``dest`` with ``dpkg -x`` and return ``dest``."""
    run_checked(["dpkg", "-x", str(deb), str(dest)])
    return dest


def download_deb(dest: Path) -> Path:
    """``apt-get download`` the package into ``dest`` and return the .deb."""
    run_checked(["apt-get", "download", PACKAGE], cwd=dest)
    debs = sorted(dest.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        sys.exit(f"error: apt-get download left no {PACKAGE}_*.deb in {dest}")
    return debs[-1]


def find_png_root(root: Path) -> Path:
    """Return the ``png`` folder for an extraction root or the folder itself."""
    if (root / PNG_SUBDIR).is_dir():
        return root / PNG_SUBDIR
    if root.is_dir() and any(root.rglob("*.png")):
        return root
    sys.exit(f"error: no openclipart png tree found under {root}")


def package_version(png_root: Path) -> str:
    """Read the Debian version from the extracted changelog, if present."""
    for base in (png_root.parents[3] if len(png_root.parents) > 3 else None, png_root):
        if base is None:
            continue
        changelog = base / DOC_SUBDIR / "changelog.Debian.gz"
        if changelog.is_file():
            with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as fh:
                m = re.match(r"\S+ \(([^)]+)\)", fh.readline())
            if m:
                return m.group(1)
    return "unknown"


# --------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One source PNG and where it goes in the demo set."""

    source: str  # posix path relative to the png root
    category: str
    subcategory: str  # '/'-joined sub-folders below the category, '' if none
    out_path: str  # posix path relative to <out>
    name_words: str


def name_words(stem: str) -> str:
    """Split a file stem on ``_``, ``-``, whitespace and digits into words."""
    tokens = _WORD_SPLIT.split(stem.lower())
    return " ".join(t for t in tokens if t and not t.isdigit())


def make_item(rel: str) -> Item:
    parts = rel.split("/")
    if len(parts) < 2:
        raise ValueError(f"{rel}: PNG outside any category folder")
    category, subs, fname = parts[0], parts[1:-1], parts[-1]
    stem = fname[: -len(".png")] if fname.lower().endswith(".png") else fname
    flat = "__".join([*subs, stem])
    return Item(
        source=rel,
        category=category,
        subcategory="/".join(subs),
        out_path=f"images/{category}/{flat}.jpg",
        name_words=name_words(stem),
    )


def enumerate_pngs(png_root: Path) -> list[str]:
    """All PNG files below ``png_root`` as posix relative paths, sorted."""
    rels = [
        p.relative_to(png_root).as_posix()
        for p in png_root.rglob("*")
        if p.is_file() and p.suffix.lower() == ".png"
    ]
    return sorted(rels)


def sha1_rank(rel: str) -> tuple[str, str]:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest(), rel


def water_fill(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` over categories as evenly as their ``sizes`` allow.

    Categories whose size is at most the current equal share get all their
    items; the rest is re-shared among the remaining categories until every
    remaining category is larger than its share.  The final remainder
    ``left % k`` goes, one each, to the largest categories (ties by name).
    The result sums to ``min(n, sum(sizes))``.
    """
    if n >= sum(sizes.values()):
        return dict(sizes)
    alloc: dict[str, int] = {}
    remaining = dict(sizes)
    left = n
    while remaining:
        share = left // len(remaining)
        small = sorted(c for c, s in remaining.items() if s <= share)
        if not small:
            break
        for c in small:
            alloc[c] = remaining.pop(c)
            left -= alloc[c]
    if remaining:
        k = len(remaining)
        base, extra = divmod(left, k)
        order = sorted(remaining, key=lambda c: (-remaining[c], c))
        for i, c in enumerate(order):
            alloc[c] = base + (1 if i < extra else 0)
    return {c: alloc[c] for c in sorted(alloc)}


# --------------------------------------------------------------------------
# Image processing
# --------------------------------------------------------------------------


def to_rgba(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGBA, honouring palette/tRNS transparency."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / 257.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if im.mode == "RGBA":
        return im
    # P/L/RGB with a ``transparency`` entry, LA, PA, 1, CMYK, ... all handled
    # by Pillow's converter.
    return im.convert("RGBA")


def render(src: Path, size: int, quality: int) -> bytes:
    """Return JPEG bytes of ``src`` on white, padded to a centred square.

    The image is scaled so that its longer side is ``size`` (LANCZOS, on
    premultiplied alpha, which Pillow does for RGBA), centred on a transparent
    ``size`` x ``size`` canvas and composited onto white.  This equals padding
    to a square with white and then resizing, but never builds the padded
    full-resolution image (some sources are 16000 px wide).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(src) as im:
            im.load()
            rgba = to_rgba(im)
    w, h = rgba.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image {w}x{h}")
    scale = size / max(w, h)
    tw = min(size, max(1, round(w * scale)))
    th = min(size, max(1, round(h * scale)))
    if (tw, th) != (w, h):
        rgba = rgba.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGBA", (size, size), (*WHITE, 0))
    canvas.paste(rgba, ((size - tw) // 2, (size - th) // 2))
    out = Image.new("RGBA", (size, size), (*WHITE, 255))
    out.alpha_composite(canvas)
    buf = io.BytesIO()
    out.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _render_job(args: tuple[str, str, int, int]) -> tuple[str, bytes | None, str]:
    root, rel, size, quality = args
    try:
        return rel, render(Path(root) / rel, size, quality), ""
    except Exception as exc:  # noqa: BLE001 - any decode failure means "skip"
        msg = str(exc).replace(str(Path(root) / rel), rel)  # no machine paths
        return rel, None, f"{type(exc).__name__}: {msg}"


def select_and_render(
    png_root: Path, rels: list[str], n: int, size: int, quality: int, jobs: int
) -> tuple[dict[str, int], list[Item], dict[str, bytes], dict[str, str]]:
    """Water-fill quotas, render picks, replace unreadable files, repeat."""
    items = {rel: make_item(rel) for rel in rels}
    by_cat: dict[str, list[str]] = {}
    for rel in rels:
        by_cat.setdefault(items[rel].category, []).append(rel)
    for cat in by_cat:
        by_cat[cat].sort(key=sha1_rank)

    rendered: dict[str, bytes] = {}
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        while True:
            usable = {c: [r for r in rs if r not in failed] for c, rs in by_cat.items()}
            quotas = water_fill({c: len(rs) for c, rs in usable.items()}, n)
            picked = [r for c in sorted(usable) for r in usable[c][: quotas[c]]]
            todo = [r for r in picked if r not in rendered]
            if not todo:
                break
            args = [(str(png_root), r, size, quality) for r in todo]
            for rel, data, err in pool.map(_render_job, args, chunksize=8):
                if data is None:
                    failed[rel] = err
                else:
                    rendered[rel] = data
    chosen = sorted((items[r] for r in picked), key=lambda it: it.out_path)
    outs = Counter(it.out_path for it in chosen)
    dupes = [p for p, k in outs.items() if k > 1]
    if dupes:
        sys.exit(f"error: flattened names collide: {dupes[:5]}")
    return quotas, chosen, {r: rendered[r] for r in picked}, failed


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def clear_output(out: Path) -> None:
    """Remove everything this script writes, so no stale file survives."""
    shutil.rmtree(out / "images", ignore_errors=True)
    for name in ("index.csv", "SOURCE.md"):
        (out / name).unlink(missing_ok=True)


def write_index(out: Path, chosen: list[Item]) -> None:
    with open(out / "index.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for it in chosen:
            writer.writerow(
                [it.out_path, it.category, it.subcategory, it.name_words, it.source]
            )


def rebuild_command(args: argparse.Namespace) -> str:
    """Command that rebuilds this output (``--out`` only if in-repo, non-default)."""
    cmd = "python scripts/build_demo.py"
    out = Path(args.out).resolve()
    if out != DEFAULT_OUT and out.is_relative_to(REPO_ROOT):
        cmd += f" --out {out.relative_to(REPO_ROOT).as_posix()}"
    for flag, val, default in (
        ("--n", args.n, DEFAULT_N),
        ("--size", args.size, DEFAULT_SIZE),
        ("--quality", args.quality, DEFAULT_QUALITY),
    ):
        if val != default:
            cmd += f" {flag} {val}"
    return cmd


def write_source_md(
    out: Path,
    args: argparse.Namespace,
    version: str,
    n_available: int,
    cat_sizes: dict[str, int],
    chosen: list[Item],
    failed: dict[str, str],
) -> None:
    counts = Counter(it.category for it in chosen)
    lines = [
        "# Demo image set: provenance",
        "",
        f"{len(chosen)} clip-art images in {len(counts)} categories, generated by",
        "`scripts/build_demo.py`. Do not edit by hand; rebuild instead.",
        "",
        "## Source",
        "",
        f"- Debian package `{PACKAGE}`, version `{version}` (architecture `all`),",
        "  i.e. the Open Clip Art Library 0.18 PNG renderings",
        "  (<http://www.openclipart.org>).",
        "- Licence: **public domain**. Per the package's `debian/copyright`, every",
        "  image is released under the Creative Commons Public Domain Dedication",
        "  (Copyright-Only Dedication / Public Domain Certification).",
        f"- Images taken from `/{PNG_SUBDIR.as_posix()}/` in the package "
        f"({n_available} PNGs in {len(cat_sizes)} top-level folders).",
        "",
        "## Processing",
        "",
        "1. All PNGs are enumerated, sorted by path relative to the png folder;",
        "   the top-level folder is the `category`.",
        f"2. Selection (no randomness): {args.n} images are split over all",
        "   categories by water-filling: equal quota per category; categories",
        "   with fewer images than the quota contribute all of them and the rest",
        "   is re-shared among the others (last remainder: one extra image each",
        "   for the largest categories). Within a category files are ranked by",
        "   the SHA-1 of their relative path and the first *q* that Pillow can",
        "   open are used.",
        "3. Each image is converted to RGBA (palette / tRNS transparency and",
        "   grey+alpha honoured), scaled with LANCZOS so its longer side is",
        f"   {args.size} px, centred on a {args.size}x{args.size} square and",
        "   composited onto white (equivalent to padding to a white square and",
        "   resizing).",
        f"4. Saved as baseline JPEG, quality {args.quality}, `optimize=True`, no",
        "   EXIF, at `images/<category>/<flattened_name>.jpg`, where",
        "   `flattened_name` joins the sub-folders and the file stem with `__`",
        "   (`science/astronomy/x.png` -> `images/science/astronomy__x.jpg`).",
        "5. `index.csv` (UTF-8, sorted by `path`) has the columns `path`",
        "   (relative to this folder), `category`, `subcategory` (sub-folders",
        "   below the category joined by `/`, empty if none), `name_words` (file",
        "   stem split on `_`, `-`, whitespace and digits, lower-cased, empty and",
        "   numeric tokens dropped; raw, so author names remain) and `source`",
        "   (original path relative to the png folder).",
    ]
    if failed:
        lines += [
            "",
            f"Skipped {len(failed)} candidate file(s) Pillow could not open "
            "(replaced by the next-ranked file of the same category):",
            "",
        ]
        lines += [f"- `{rel}`: {err}" for rel, err in sorted(failed.items())]
    lines += [
        "",
        "## Rebuild",
        "",
        "From the repository root (needs `apt-get download`; run",
        "`sudo apt-get update` first if the package is not found):",
        "",
        "```sh",
        rebuild_command(args),
        "```",
        "",
        "or, with an already downloaded package, add `--deb PATH.deb` (or",
        "`--root DIR` for an extracted one). The output is",
        "byte-identical across runs for the same package and Pillow/libjpeg.",
        "",
        "## Counts per category",
        "",
        "| category | images | available |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {c} | {counts.get(c, 0)} | {cat_sizes[c]} |" for c in sorted(cat_sizes)
    ]
    lines += [f"| **total** | **{len(chosen)}** | **{n_available}** |", ""]
    (out / "SOURCE.md").write_text("\n".join(lines), encoding="utf-8")


def build(png_root: Path, args: argparse.Namespace) -> None:
    out = Path(args.out)
    rels = enumerate_pngs(png_root)
    if not rels:
        sys.exit(f"error: no PNGs under {png_root}")
    cat_sizes = dict(sorted(Counter(make_item(r).category for r in rels).items()))
    print(f"found {len(rels)} PNGs in {len(cat_sizes)} categories under {png_root}")

    quotas, chosen, data, failed = select_and_render(
        png_root, rels, args.n, args.size, args.quality, args.jobs
    )
    if failed:
        print(f"skipped {len(failed)} file(s) Pillow could not open:")
        for rel, err in sorted(failed.items()):
            print(f"  {rel}: {err}")

    clear_output(out)
    for it in chosen:
        dest = out / it.out_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data[it.source])
    write_index(out, chosen)
    write_source_md(
        out, args, package_version(png_root), len(rels), cat_sizes, chosen, failed
    )

    counts = Counter(it.category for it in chosen)
    img_bytes = sum(len(b) for b in data.values())
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{'category':<20} {'images':>6} {'available':>9}")
    for c in sorted(cat_sizes):
        print(f"{c:<20} {counts.get(c, 0):>6} {cat_sizes[c]:>9}")
    print(f"{'total':<20} {len(chosen):>6} {len(rels):>9}")
    print(f"image bytes: {img_bytes:,}; total bytes in {out}: {total:,}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Build the bundled demo image set from Debian's openclipart-png."
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--deb", type=Path, help="downloaded openclipart-png .deb")
    src.add_argument(
        "--root", type=Path, help="extracted package root or its png/ folder"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="number of images")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side in px")
    ap.add_argument(
        "--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality"
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes (does not affect the output)",
    )
    args = ap.parse_args(argv)
    if args.n < 1 or args.size < 1 or not 1 <= args.quality <= 100 or args.jobs < 1:
        ap.error("--n, --size, --jobs must be >= 1 and --quality in 1..100")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.root is not None:
        build(find_png_root(args.root), args)
        return
    with tempfile.TemporaryDirectory(prefix="build_demo_") as tmp:
        tmp_path = Path(tmp)
        deb = args.deb if args.deb is not None else download_deb(tmp_path)
        if not Path(deb).is_file():
            sys.exit(f"error: {deb} is not a file")
        root = extract_deb(Path(deb), tmp_path / "root")
        build(find_png_root(root), args)


if __name__ == "__main__":
    main()
