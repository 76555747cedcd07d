"""How long do the light commands take to start, next to a bare Python start?

What: in one run, this times (wall clock, each command run ``--repeats`` times in turn, median reported)

1. ``python -c pass``                 the interpreter alone, the floor;
   ``python -c "import pandas"``      what any command that reads a table pays (pandas + numpy), for scale;
2. ``unitlens --help``                the command tree (typer, rich; no torch);
3. ``unitlens mis --help``            a sub-group's help;
4. ``unitlens atlas info ATLAS``      a table-only command on a small atlas that this script records first
                                      (EfficientNet-Lite0, random init, 6 generated 32 px images, 2 layers).

and prints each time and its ratio to ``python -c pass``, and whether the command imported torch (a
``-X importtime`` run of it, counted, not timed).

Why: every command used to take 3.5-4 s, ``--help`` included, mostly importing torch. ``--help`` and table-only
commands should start in well under a second; commands that load a model pay for torch when they need it.

Run (from the repository root):

    .venv/bin/python benchmarks/startup.py --repeats 5

The ``unitlens`` script next to the running Python is used (``--unitlens PATH`` for another). On a machine shared
with other jobs the times are upper bounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _record_small_atlas(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    from unitlens import load_model, record

    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"img_{i}.png")
    out = root / "atlas"
    record(load_model("efficientnet_lite0", pretrained=False), str(images), out,
           ["blocks.6.0.conv_pwl", "blocks.6.0.bn3"], k=2, num_workers=0, progress=False)
    return out


def _time(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _imports_torch(command: list[str]) -> bool:
    """Whether the command imports torch (from a ``-X importtime`` run of the script's Python)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=True)
    return any(line.rstrip().endswith("| torch") for line in done.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--unitlens", default=str(Path(sys.executable).parent / "unitlens"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        atlas = _record_small_atlas(Path(tmp))
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import pandas'": [sys.executable, "-c", "import pandas"],
            "unitlens --help": [args.unitlens, "--help"],
            "unitlens mis --help": [args.unitlens, "mis", "--help"],
            "unitlens atlas info ATLAS": [args.unitlens, "atlas", "info", str(atlas)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):  # in turn, so background load hits every command alike
            for name, command in commands.items():
                times[name].append(_time(command))
        torch_used = {name: _imports_torch(command) for name, command in commands.items()}
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<28} {'median (s)':>10} {'min (s)':>8} {'x python':>9}  imports torch")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<28} {median:>10.3f} {min(values):>8.3f} {median / base:>9.1f}  "
              f"{'yes' if torch_used[name] else 'no'}")
    print(f"({args.repeats} runs each, {os.cpu_count()} CPUs; times on a shared machine are upper bounds)")


if __name__ == "__main__":
    main()
