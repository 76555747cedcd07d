"""What content-hashing a dataset costs: the size-only fingerprint (the baseline, what ``--no-content-hash`` does)
against hashing every file's bytes (a new atlas) and against reusing recorded hashes (every later record, resume
or ``--force`` of unchanged files), with decoding the images once (what the record pass does anyway) for scale.

    .venv/bin/python benchmarks/content_hash.py                       # the bundled demo set (1,000 small JPEGs)
    .venv/bin/python benchmarks/content_hash.py --data DIR            # any image folder or file list
    .venv/bin/python benchmarks/content_hash.py --synthetic 300 --mb 2   # 300 files of 2 MB in a temp folder

Files are read once before timing, so every figure is with a warm page cache: it measures hashing, not the disk
(a cold disk adds its read time to the hashing and to the record pass alike). Prints one line per method with
seconds, files/s and MB/s, and the ratios against the baseline.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from unitlens.data import load_dataset
from unitlens.data.images import open_rgb


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo")
    ap.add_argument("--synthetic", type=int, default=0, help="write this many random files instead of --data")
    ap.add_argument("--mb", type=float, default=1.0, help="size of each synthetic file")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:  # random bytes named .png: fingerprints never decode, so they need not be images
            rng = np.random.default_rng(0)
            for i in range(args.synthetic):
                (Path(tmp) / f"f{i:05d}.png").write_bytes(rng.bytes(int(args.mb * 2**20)))
        data = load_dataset(tmp if args.synthetic else args.data)
        paths = [str(p) for p in data.samples["path"]]
        total = sum(Path(p).stat().st_size for p in paths) / 2**20
        for p in paths:  # warm the page cache
            Path(p).read_bytes()
        recorded = data.with_content_hash(True)
        recorded.hash_contents()

        def fresh() -> str:
            d = data.with_content_hash(True)
            d.hash_contents()
            return d.fingerprint()

        def reuse() -> str:
            d = data.with_content_hash(True)
            assert d.hash_contents(known=recorded.samples) == 0
            return d.fingerprint()

        size_only = timed(lambda: data.with_content_hash(False).fingerprint(), args.repeat)
        rows = [("size-only fingerprint (baseline)", size_only), ("hash every file (new atlas)",
                 timed(fresh, args.repeat)), ("reuse recorded hashes (unchanged files)", timed(reuse, args.repeat))]
        if not args.synthetic:
            rows.append(("decode every image once (record pass)", timed(lambda: [open_rgb(p) for p in paths], 1)))
    print(f"{len(paths)} files, {total:.1f} MB ({args.data if not args.synthetic else 'synthetic'}), warm cache, "
          f"best of {args.repeat}")
    for name, sec in rows:
        print(f"  {name:42s} {sec:8.3f} s  {len(paths) / sec:10.0f} files/s  {total / sec:8.0f} MB/s  "
              f"{sec / size_only:6.1f}x baseline")


if __name__ == "__main__":
    main()
