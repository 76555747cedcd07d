"""The training data of the ``offline-vl`` projection: Debian's ``openclipart-png``, grouped into images, captioned,
split, rendered and embedded by both frozen towers (cached).

Shared by ``scripts/train_offline_vl.py`` and ``scripts/eval_offline_vl.py`` (run from the repository root; the
package download, extraction and rendering helpers come from ``scripts/build_demo.py``, which builds the bundled
demo set from the same package).

Images
    Every PNG under ``usr/share/openclipart/png`` (8,121 paths in package version 1:0.18+dfsg-19). Paths with the
    same bytes (symlinks, copies) are one *image* (6,900), which keeps all its paths. Each image is rendered
    exactly as the demo set is (``build_demo.render``: on white, padded square, 160 px, JPEG quality 85), so the
    bundled demo JPEGs are byte-identical renderings and the projection sees training images in the form the lens
    demo embeds. Files Pillow refuses (its decompression-bomb limit) are skipped and counted.

Captions (one per path; deterministic; the only hand-made lists are ``FUNCTION_WORDS`` and ``NOT_AUTHORS``)
    ``"<title words>, <sub-folder words, deepest first>, <category words>"``, e.g.
    ``transportation/vehicles/ambulans_romus_01.png`` -> ``"ambulans romus, vehicles, transportation"`` and
    ``animals/mammals/canguro_architetto_franc_01.png`` -> ``"canguro, mammals, animals"``. The title comes from the
    file name (``<title words>_<author>_<nn>``, often cut at 24 characters, author not marked):

    1. lower-case the stem and split it on ``_`` into tokens;
    2. numbering: drop trailing tokens that are empty, one character long, or digits with at most one letter
       (``01``, ``2``, ``01a``, ``01r``), repeatedly;
    3. authors: a token's *key* is the token without trailing digits (``ganson1`` -> ``ganson``). If the key of one
       of the last two remaining tokens (never the first token) is in the *author lexicon*, drop that token and
       everything after it (from the earlier of the two if both are). The lexicon is computed from the package,
       over real (non-symlink) files: keys that are among the last two keys of names in at least 3 top-level
       categories, start at most a tenth as many names as they end, are no folder word (nor its singular or
       plural), have no digit and 2+ characters, and are neither a function word (``FUNCTION_WORDS``) nor one of
       the four generic words the statistics also flag (``NOT_AUTHORS``: circle, design, room, template; reviewed
       on version 1:0.18+dfsg-19). This finds prolific authors (``architetto``, ``benji``, ``ganson``, ``nicu``,
       ...) and their cut-off surnames; authors of a file or two stay in the caption (the lexicon is recorded in
       the manifest);
    4. words: split the remaining tokens on anything that is not a letter a-z and keep words of 2+ letters.

    Folder words are the folder names split the same way (``signs_and_symbols`` -> ``signs and symbols``).

Training texts
    Each path gives its caption plus three coarser views of it: its folders alone (``"vehicles, transportation"``),
    its category alone (``"transportation"``) and its first sub-folder alone (``"vehicles"``); an image's
    positives are the distinct texts of all its paths. The views teach the space the names the zero-shot classes
    use as well as the full captions: with the caption alone the file-name words dominate and ``computer`` icons,
    ``special`` patterns, ... land far from their category's name. Development runs on validation picked them
    (top-category accuracy 0.45 -> 0.74, sub-category 0.52 -> 0.76, recall@5 0.55 -> 0.53).

Split (by image, stratified by category)
    An image's *category* is the top folder of its first path. Within each category of n images, validation gets
    round(0.1 n) and test round(0.1 n), except that bundled demo images (``src/unitlens/data/demo/index.csv``,
    column ``source``) are held out first, so the lens demo and tests look at unseen images wherever the data
    allows: a category's demo images, sorted by SHA-1 and seeded-shuffled, fill test up to round(0.2 n) (the
    *demo cap*), then validation up to its round(0.1 n); demo images beyond that are train. The category's other
    images (same order rule) then fill test and validation up to round(0.1 n) each; the rest are train. Every
    category thus keeps at least 70 % of its images for training: the demo set takes ~45 images from each
    category, all of the 7 smallest ones (3-44 images), and without the cap those categories had no training
    image at all (1.8 % accuracy there). The manifest records how many demo images are train.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_demo  # noqa: E402  (scripts/ is not a package)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_INDEX = REPO_ROOT / "src" / "unitlens" / "data" / "demo" / "index.csv"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unitlens" / "offline-vl"
RENDER = {"size": build_demo.DEFAULT_SIZE, "quality": build_demo.DEFAULT_QUALITY}
SPLIT_FRACTIONS = {"validation": 0.10, "test": 0.10}
DEMO_TEST_CAP = 0.20  # demo images fill test up to this share of their category
FUNCTION_WORDS = frozenset({"a", "an", "and", "at", "by", "con", "da", "de", "del", "di", "du", "for", "in", "la",
                            "le", "of", "on", "the", "to", "with"})
NOT_AUTHORS = frozenset({"circle", "design", "room", "template"})
AUTHOR_MIN_CATEGORIES = 3
_NUMBERING = re.compile(r"\d+[a-z]?")
_NOT_LETTERS = re.compile(r"[^a-z]+")


# ------------------------------------------------------------------------------------------ the package
@dataclass(frozen=True)
class Source:
    png_root: Path
    version: str
    origin: str  # how it was found: a --source folder, a .deb, or apt-get download


def _deb_version(deb: Path) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def add_source_arguments(ap) -> None:
    """The ``--source | --deb`` and ``--cache`` options every offline-vl script reads with ``locate_source``."""
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="extracted openclipart-png tree (root or its png/ folder)")
    src.add_argument("--deb", type=Path, help="a downloaded openclipart-png .deb")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="package, renderings, cached features")


def locate_source(source: Path | None, deb: Path | None, cache: Path) -> Source:
    """The extracted package: ``source`` (extracted tree), else ``deb`` extracted into the cache, else a cached
    extraction, else ``apt-get download openclipart-png`` into the cache and ``dpkg -x``."""
    if source is not None:
        root = build_demo.find_png_root(Path(source))
        return Source(root, build_demo.package_version(root), f"--source {source}")
    pkg = cache / "package"
    if deb is None:
        debs = sorted(pkg.glob(f"{build_demo.PACKAGE}_*.deb"))
        if not debs:
            pkg.mkdir(parents=True, exist_ok=True)
            debs = [build_demo.download_deb(pkg)]
        deb = debs[-1]
    deb = Path(deb)
    if not deb.is_file():
        sys.exit(f"error: {deb} is not a file")
    version = _deb_version(deb)
    root = pkg / f"root-{hashlib.sha1(version.encode()).hexdigest()[:8]}"
    if not (root / build_demo.PNG_SUBDIR).is_dir():
        build_demo.extract_deb(deb, root)
    return Source(build_demo.find_png_root(root), version, f"{deb.name} (dpkg-deb Version {version})")


# ------------------------------------------------------------------------------------------ captions
def words(text: str) -> list[str]:
    return [w for w in _NOT_LETTERS.split(text.lower()) if len(w) >= 2]


def name_tokens(rel: str) -> list[str]:
    """Steps 1-2 of the caption rule: the file stem's ``_`` tokens without trailing numbering."""
    stem = rel.rsplit("/", 1)[-1]
    stem = stem[: -len(".png")] if stem.lower().endswith(".png") else stem
    tokens = stem.lower().split("_")
    while tokens and (len(tokens[-1]) <= 1 or _NUMBERING.fullmatch(tokens[-1])):
        tokens.pop()
    return tokens


def _key(token: str) -> str:
    return token.rstrip("0123456789")


def author_lexicon(rels: list[str], png_root: Path) -> list[str]:
    """Step 3's lexicon: keys that end names of real files in >= 3 categories and behave like author names."""
    real = [r for r in rels if not (png_root / r).is_symlink()]
    folder_words = {w for r in rels for part in r.split("/")[:-1] for w in _NOT_LETTERS.split(part.lower())}
    categories: dict[str, set[str]] = defaultdict(set)
    ends: dict[str, int] = defaultdict(int)
    starts: dict[str, int] = defaultdict(int)
    for rel in real:
        keys = [_key(t) for t in name_tokens(rel)]
        if not keys:
            continue
        starts[keys[0]] += 1
        for k in set(keys[1:][-2:]):
            categories[k].add(rel.split("/")[0])
            ends[k] += 1
    return sorted(k for k, cats in categories.items()
                  if len(cats) >= AUTHOR_MIN_CATEGORIES and 10 * starts[k] <= ends[k]
                  and not {k, k + "s", k.removesuffix("s")} & folder_words
                  and k not in FUNCTION_WORDS | NOT_AUTHORS and len(k) >= 2 and not re.search(r"\d", k))


def title_words(rel: str, lexicon: frozenset[str]) -> list[str]:
    """Steps 1-4 of the caption rule for one path."""
    tokens = name_tokens(rel)
    for i in range(max(1, len(tokens) - 2), len(tokens)):
        if _key(tokens[i]) in lexicon:
            tokens = tokens[:i]
            break
    return [w for t in tokens for w in words(t)]


def caption(rel: str, lexicon: frozenset[str]) -> str:
    folders = rel.split("/")[:-1]
    parts = [" ".join(title_words(rel, lexicon))] + [" ".join(words(f)) for f in reversed(folders)]
    return ", ".join(p for p in parts if p)


def training_texts(image: "ClipArt") -> list[str]:
    """The distinct positives of an image: every path's caption, its folders, its category, its first sub-folder."""
    out = set(image.captions)
    for path in image.paths:
        folders = path.split("/")[:-1]
        out.add(", ".join(readable(f) for f in reversed(folders)))
        out.update(readable(f) for f in folders[:2])
    return sorted(out)


def readable(folder: str) -> str:
    """A folder name as words: ``signs_and_symbols`` -> ``signs and symbols``."""
    return " ".join(words(folder))


# ------------------------------------------------------------------------------------------ images and split
@dataclass
class ClipArt:
    """One distinct image: its SHA-1, all its paths (sorted) and their captions, its split."""

    sha1: str
    paths: list[str]
    captions: list[str] = field(default_factory=list)
    split: str = ""
    demo: bool = False


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def scan(source: Source, seed: int) -> tuple[list[ClipArt], list[str]]:
    """All images of the package, captioned and split (see the module doc), and the author lexicon."""
    rels = build_demo.enumerate_pngs(source.png_root)
    if not rels:
        sys.exit(f"error: no PNGs under {source.png_root}")
    groups: dict[str, list[str]] = defaultdict(list)
    for rel in rels:
        groups[_sha1(source.png_root / rel)].append(rel)
    lexicon = author_lexicon(rels, source.png_root)
    lex = frozenset(lexicon)
    demo = demo_sources()
    images = []
    for sha in sorted(groups):
        paths = sorted(groups[sha])
        images.append(ClipArt(sha, paths, [caption(p, lex) for p in paths], demo=any(p in demo for p in paths)))
    missing = demo - {p for im in images for p in im.paths}
    if missing:
        sys.exit(f"error: {len(missing)} demo images are not in this package (e.g. {sorted(missing)[0]}); "
                 "the demo set was built from another version")
    assign_split(images, seed)
    return images, lexicon


def demo_sources() -> set[str]:
    with open(DEMO_INDEX, encoding="utf-8") as fh:
        return {row["source"] for row in csv.DictReader(fh)}


def assign_split(images: list[ClipArt], seed: int) -> None:
    """Stratified split by category with the demo images held out first (module doc, "Split")."""
    rng = np.random.default_rng(seed)
    by_category: dict[str, list[ClipArt]] = defaultdict(list)
    for im in images:
        by_category[category(im)].append(im)
    for name in sorted(by_category):
        members = by_category[name]
        n = len(members)
        quota = {s: round(f * n) for s, f in SPLIT_FRACTIONS.items()}
        demo_quota = {"test": round(DEMO_TEST_CAP * n), "validation": quota["validation"]}
        filled = {"test": 0, "validation": 0, "train": 0}
        for is_demo, limits in ((True, demo_quota), (False, quota)):
            group = sorted((im for im in members if im.demo == is_demo), key=lambda im: im.sha1)
            for idx in rng.permutation(len(group)):
                split = next((s for s in ("test", "validation") if filled[s] < limits[s]), "train")
                group[idx].split = split
                filled[split] += 1


def category(im: ClipArt) -> str:
    """The top folder of the image's first path: the stratum of the split."""
    return im.paths[0].split("/")[0]


def split_digest(images: list[ClipArt]) -> dict[str, str]:
    """SHA-256 of each split's sorted image SHA-1s: what the manifest records and the eval script checks."""
    out = {}
    for name in ("train", "validation", "test"):
        shas = sorted(im.sha1 for im in images if im.split == name)
        out[name] = hashlib.sha256("\n".join(shas).encode()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------ rendering
def _render_one(job: tuple[str, str, str]) -> tuple[str, str]:
    src, dest, sha = job
    try:
        data = build_demo.render(Path(src), RENDER["size"], RENDER["quality"])
    except Exception as err:  # noqa: BLE001 - decode failures (decompression-bomb limit, broken files) are skipped
        return sha, f"{type(err).__name__}: {str(err).replace(src, Path(src).name)}"
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(dest).with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return sha, ""


def render_all(source: Source, images: list[ClipArt], cache: Path, jobs: int, progress) -> dict[str, str]:
    """Render every image to ``<cache>/render-<size>-q<quality>/<sha1>.jpg`` (once); returns {sha1: error} skips."""
    folder = render_dir(cache)
    todo = [(str(source.png_root / im.paths[0]), str(folder / f"{im.sha1}.jpg"), im.sha1)
            for im in images if not (folder / f"{im.sha1}.jpg").is_file()]
    failed = {}
    if todo:
        task = progress.add_task("render PNGs", total=len(todo))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for sha, err in pool.map(_render_one, todo, chunksize=16):
                if err:
                    failed[sha] = err
                progress.advance(task)
    return failed


def render_dir(cache: Path) -> Path:
    return cache / f"render-{RENDER['size']}-q{RENDER['quality']}"


# ------------------------------------------------------------------------------------------ cached embeddings
def _load_cached(path: Path) -> dict[str, torch.Tensor]:
    from unitlens.atlas.files import read_tensors

    if not path.is_file():
        return {}
    t = read_tensors(path)
    keys = [bytes(row).hex() for row in t["keys"].tolist()]
    return dict(zip(keys, t["vectors"]))


def _save_cached(path: Path, table: dict[str, torch.Tensor], what: str) -> None:
    from unitlens.atlas.files import write_tensors

    keys = sorted(table)
    write_tensors(path, {"keys": torch.tensor([list(bytes.fromhex(k)) for k in keys], dtype=torch.uint8),
                         "vectors": torch.stack([table[k] for k in keys])}, metadata={"what": what})


def image_features(images: list[ClipArt], cache: Path, towers, progress, chunk: int = 256) -> dict[str, torch.Tensor]:
    """{sha1: (1280,) normalised Lite2 feature} of every rendered image (cached: ``<cache>/features-*.safetensors``)."""
    from unitlens.backends import embed_images
    from unitlens.data.images import open_rgb

    path = cache / f"features-{towers.features.name.replace(':', '_')}-{render_dir(cache).name}.safetensors"
    table = _load_cached(path)
    folder = render_dir(cache)
    todo = [im.sha1 for im in images if im.sha1 not in table and (folder / f"{im.sha1}.jpg").is_file()]
    if todo:
        task = progress.add_task(f"features {towers.features.name}", total=len(todo))
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            vecs = embed_images(towers.features, [open_rgb(folder / f"{sha}.jpg") for sha in part], batch_size=64)
            table.update(zip(part, vecs))
            _save_cached(path, table, f"{towers.features.name} features of {folder.name} renderings")
            progress.advance(task, len(part))
    return table


def text_embeddings(texts: list[str], cache: Path, towers, progress, chunk: int = 512) -> torch.Tensor:
    """(len(texts), 384) normalised MiniLM embeddings, in the order given.

    The distinct texts are embedded sorted, in chunks of ``chunk``, and cached under a name made from their
    SHA-1: padding makes an embedding depend on its batch in the 7th decimal, so one fixed batching per text set
    keeps every run (from scratch or from the cache) bit-identical.
    """
    distinct = sorted(set(texts))
    digest = hashlib.sha1("\n".join(distinct).encode("utf-8")).hexdigest()[:16]
    path = cache / f"text-all-MiniLM-L6-v2-{digest}.safetensors"
    table = _load_cached(path)
    if not table and distinct:
        task = progress.add_task("text embeddings", total=len(distinct))
        vectors = []
        for s in range(0, len(distinct), chunk):
            vectors.append(towers.encode_text(distinct[s:s + chunk]))
            progress.advance(task, len(distinct[s:s + chunk]))
        table = dict(zip((_text_key(t) for t in distinct), torch.cat(vectors)))
        _save_cached(path, table, "all-MiniLM-L6-v2 sentence embeddings, keyed by the SHA-1 of the text")
    return torch.stack([table[_text_key(t)] for t in texts]) if texts else torch.empty(0, towers.dim)


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
