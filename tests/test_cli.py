"""The command line end to end on a tiny folder: record, summary, no-op rerun, atlas info, DuckDB query."""
from __future__ import annotations

import duckdb
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import unitlens.cli.common
from unitlens.cli import app

from conftest import write_images

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables as a wide terminal shows them, so cell text is not folded."""
    monkeypatch.setattr(unitlens.cli.common, "console", Console(width=200, soft_wrap=True))


def test_record_info_and_duckdb_across_atlases(tmp_path):
    rng = np.random.default_rng(3)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)])
    args = ["record", "--model", "efficientnet_lite0", "--data", str(tmp_path / "imgs"), "--k", "3",
            "--layers", "blocks.*.conv_pwl", "--workers", "0"]
    first = runner.invoke(app, args + ["--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "images/s" in first.output and "constant" in first.output
    again = runner.invoke(app, args + ["--out", str(tmp_path / "a")])
    assert again.exit_code == 0 and "already complete" in again.output
    assert runner.invoke(app, args + ["--out", str(tmp_path / "b"), "--random"]).exit_code == 0
    info = runner.invoke(app, ["atlas", "info", str(tmp_path / "a")])
    assert info.exit_code == 0 and "blocks.6.0.conv_pwl" in info.output and "status: complete" in info.output
    rows = duckdb.sql(
        f"SELECT filename LIKE '%/a/%' AS pretrained, count(*) AS units, count(DISTINCT layer) AS layers "
        f"FROM read_parquet(['{tmp_path}/a/units.parquet', '{tmp_path}/b/units.parquet'], filename=true) "
        "GROUP BY ALL ORDER BY pretrained").fetchall()
    assert rows == [(False, rows[0][1], 15), (True, rows[0][1], 15)]  # block 0 has conv_pw, not conv_pwl


def test_clear_errors(tmp_path):
    bad = runner.invoke(app, ["record", "--model", "efficientnet_lite0", "--data", str(tmp_path / "none"),
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    assert runner.invoke(app, ["atlas", "info", str(tmp_path)]).exit_code == 2
    layers = runner.invoke(app, ["layers", "--model", "efficientnet_lite0", "--types", "Linear",
                                 "--keep-first-last"])
    assert layers.exit_code == 0 and "classifier" in layers.output
