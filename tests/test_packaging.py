"""The core install: a wheel built from this repository, in a fresh virtual environment that holds only the core
dependencies, records the demo and scores MIS; a command of a missing extra names the extra to install."""
from __future__ import annotations

import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _core_closure() -> set[str]:
    """Every distribution the core install pulls in (unitlens's requirements without extras, recursively)."""
    todo = [Requirement(r) for r in metadata.requires("unitlens") or []]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.requires(name) or []]
    return seen


def _link_site(names: set[str], site: Path) -> None:
    """A site folder of links to the installed files of ``names`` (their packages, modules and metadata)."""
    site.mkdir()
    for name in names:
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if top.endswith(".pth") or not (base / top).exists() or (site / top).exists():
                continue
            (site / top).symlink_to(base / top)


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(python), "-I", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(sys.platform == "win32", reason="links")
def test_core_wheel_in_a_fresh_environment_records_the_demo_and_scores_mis(tmp_path):
    wheel_dir, pkg = tmp_path / "dist", tmp_path / "pkg"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    wheel = next(wheel_dir.glob("unitlens-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(pkg),
                    str(wheel)], check=True, capture_output=True)
    core = _core_closure()
    assert "torch" in core and not core & {"lancedb", "fastapi", "duckdb", "zennit", "overcomplete"}
    _link_site(core, tmp_path / "core")
    venv.create(tmp_path / "venv", with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=tmp_path).stdout.strip())
    (site / "unitlens-core.pth").write_text(f"{pkg}\n{tmp_path / 'core'}\n")

    isolated = _run(python, "-c", "import lancedb", cwd=tmp_path)
    assert isolated.returncode != 0 and "No module named 'lancedb'" in isolated.stderr
    where = _run(python, "-c", "import unitlens; print(unitlens.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(pkg)), where.stderr  # the wheel's copy, not the repository's

    # every 8th image of the wheel's own demo set: the whole path, at a price the suite can pay
    demo = pkg / "unitlens" / "data" / "demo"
    rows = (demo / "index.csv").read_text().splitlines()
    (tmp_path / "subset.csv").write_text("\n".join([rows[0], *rows[1::8]]) + "\n")
    (tmp_path / "images").symlink_to(demo / "images")  # the listing's paths are relative to its folder
    rec = _run(python, "-m", "unitlens", "record", "--model", "efficientnet_lite0", "--data", "subset.csv", "--out",
               "atlas", "--layers", "blocks.6.0.conv_pwl", "--k", "25", "--format", "json", cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr[-3000:]
    assert '"units": 320' in rec.stdout and '"images": 125' in rec.stdout
    mis = _run(python, "-m", "unitlens", "mis", "atlas", "--n-tasks", "5", "--k-expl", "4", "--format", "json",
               cwd=tmp_path)
    assert mis.returncode == 0, mis.stderr[-3000:]
    assert '"scored": 320' in mis.stdout.replace(" ", "").replace('":', '": ')

    lens = _run(python, "-m", "unitlens", "lens", "embed", "atlas", cwd=tmp_path)
    assert lens.returncode == 2 and "pip install 'unitlens[lens]'" in lens.stderr + lens.stdout, lens.stderr[-2000:]


@pytest.mark.parametrize("module, extra, argv", [
    ("duckdb", "study", ["study", "query", "nowhere", "select 1"]),
    ("fastapi", "explorer", ["serve", "nowhere"]),
])
def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path, module, extra, argv):
    """In a process of its own where importing ``module`` fails, as when its extra is not installed."""
    code = (f"import sys; sys.modules[{module!r}] = None; sys.argv = ['unitlens', *{argv!r}]; "
            "from unitlens.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"pip install 'unitlens[{extra}]'" in out.stderr
