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


# ---------------------------------------------------------------------------------------------- readable tables
def _frame():
    import pandas as pd

    return pd.DataFrame({
        "layer": ["blocks.6.0.conv_pwl", "blocks.5.3.bn2_with_a_long_name"], "type": ["Conv", "BatchNorm"],
        "units": [320, 1152], "MIS mean": [0.581234, 0.9], "MIS p5": [0.123456, 7.6e-05],
        "acc mean": [0.7, 0.81], "constant (excluded)": [3, 0], "concept": ["a red round thing", "stripes"],
        "rel_depth": [0.96875, 1.0], "notes": ["x", "some longer free text that has to wrap somewhere"]})


def _printed(monkeypatch, frame, width: int, **kwargs) -> str:
    import io

    buf = io.StringIO()  # a file, as when the output is piped
    monkeypatch.setattr(unitlens.cli.common, "console", Console(file=buf, width=width, soft_wrap=True))
    unitlens.cli.common.print_frame(frame, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("width", [40, 80, 160])
def test_tables_fit_the_width_and_never_cut_names_or_numbers(monkeypatch, width):
    from rich.cells import cell_len

    frame = _frame()
    out = _printed(monkeypatch, frame, width, title="by layer of /a/long/path/to/an/atlas/that/is/longer/than/40")
    assert "…" not in out and "/a/long/path/to/an/atlas/that/is/longer/than/40" in out
    table_lines = [line for line in out.splitlines() if line[:1] in "┏┃┡│├└"]
    assert table_lines and all(cell_len(line) <= width for line in table_lines)
    dropped: list[str] = []
    if "do not fit" in out:
        dropped = out.split("do not fit in")[1].split(":", 1)[1].split(" (--format")[0].split(", ")
        dropped = [d.strip() for d in dropped]
    assert set(dropped) <= set(frame.columns) and "layer" not in dropped
    assert (width >= 160) == (not dropped)
    words = out.split()
    for column in frame.columns:
        if column in dropped:
            continue
        for value in frame[column]:
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            assert all(word in words for word in text.split()), (column, text, out)  # whole, never cut


def test_a_wide_single_row_is_shown_as_field_value_pairs(monkeypatch):
    frame = _frame().head(1)
    out = _printed(monkeypatch, frame, 44)
    assert "do not fit" not in out and "field" in out and "value" in out
    for column in frame.columns:
        assert all(word in out.split() for word in column.split())
    assert "blocks.6.0.conv_pwl" in out.split() and "0.5812" in out.split() and "0.9688" in out.split()


def test_layers_table_is_readable_narrow_and_piped(monkeypatch):
    from unitlens.zoo import enumerate_units, load_model

    names = [i.name for i in enumerate_units(load_model("efficientnet_lite0", pretrained=False).model)]
    for console in (Console(width=50, soft_wrap=True), Console(soft_wrap=True)):  # narrow; a pipe (80 columns)
        monkeypatch.setattr(unitlens.cli.common, "console", console)
        out = runner.invoke(app, ["layers", "--model", "efficientnet_lite0"])
        assert out.exit_code == 0, out.output
        assert "…" not in out.output
        assert all(name in out.output.split() for name in names)


def _csv_blocks(text: str) -> dict:
    """``# name: title`` + CSV blocks, separated by blank lines -> {name: DataFrame}."""
    import io

    import pandas as pd

    blocks = {}
    for block in text.strip().split("\n\n"):
        head, _, body = block.partition("\n")
        assert head.startswith("# ")
        blocks[head[2:].split(":")[0]] = pd.read_csv(io.StringIO(body))
    return blocks


def test_format_csv_and_json_print_full_tables(tmp_path):
    import json

    import pandas as pd

    from unitlens.zoo import enumerate_units, load_model

    infos = enumerate_units(load_model("efficientnet_lite0", pretrained=False).model)
    as_json = runner.invoke(app, ["layers", "--model", "efficientnet_lite0", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)["layers"]["rows"]
    assert [r["name"] for r in rows] == [i.name for i in infos]
    assert [r["rel_depth"] for r in rows] == [i.rel_depth for i in infos]  # full precision, not 4 digits
    as_csv = runner.invoke(app, ["layers", "--model", "efficientnet_lite0", "--format", "csv"])
    table = _csv_blocks(as_csv.stdout)["layers"]
    assert table["name"].tolist() == [i.name for i in infos] and table["width"].tolist() == [i.width for i in infos]
    assert runner.invoke(app, ["layers", "--format", "yaml"]).exit_code == 2

    rng = np.random.default_rng(3)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)])
    atlas = tmp_path / "a"
    rec = runner.invoke(app, ["record", "--model", "efficientnet_lite0", "--random", "--data", str(tmp_path / "imgs"),
                              "--out", str(atlas), "--k", "2", "--layers", "blocks.6.*", "--workers", "0",
                              "--format", "json"])
    assert rec.exit_code == 0, rec.output
    assert json.loads(rec.stdout)["record"]["rows"][0]["images"] == 4  # messages went to stderr
    info = json.loads(runner.invoke(app, ["atlas", "info", str(atlas), "--format", "json"]).stdout)
    units = pd.read_parquet(atlas / "units.parquet")
    assert info["atlas"]["rows"][0]["status"] == "complete"
    assert {r["layer"]: r["units"] for r in info["layers"]["rows"]} == units.groupby("layer").size().to_dict()
    blocks = _csv_blocks(runner.invoke(app, ["atlas", "info", str(atlas), "--format", "csv"]).stdout)
    assert set(blocks) == {"atlas", "layers"} and blocks["layers"]["units"].sum() == len(units)


def test_ctrl_c_during_record_says_rerunning_resumes(tmp_path, monkeypatch):
    import torch
    from torch import nn

    import unitlens.zoo
    from unitlens.zoo.factory import LoadedModel

    from conftest import to_int_tensor

    class Interrupting(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.head = nn.Linear(4, 2)
            self.calls, self.interrupt_at = 0, 4  # the 3rd batch (the check before the pass runs it once first)

        def forward(self, x):
            self.calls += 1
            if self.calls == self.interrupt_at:
                raise KeyboardInterrupt
            return self.head(self.conv(x).mean((2, 3)))

    torch.manual_seed(0)
    net = Interrupting().eval()
    monkeypatch.setattr(unitlens.zoo, "load_model", lambda *a, **k: LoadedModel("interrupting", net, to_int_tensor,
                                                                               "hand-built", (3, 8, 8)))
    rng = np.random.default_rng(0)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(8)])
    args = ["record", "--model", "interrupting", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "a"),
            "--k", "2", "--batch-size", "2", "--workers", "0", "--layers", "conv", "--keep-first-last"]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted" in stopped.output and "run the same command again to resume" in stopped.output
    net.interrupt_at = -1
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from image 4" in resumed.output


def test_table_only_commands_import_no_torch(tmp_path):
    import subprocess
    import sys

    from unitlens import record
    from unitlens.zoo.factory import LoadedModel

    from conftest import ExactNet, to_int_tensor

    rng = np.random.default_rng(1)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)])
    record(LoadedModel("exactnet", ExactNet().eval(), to_int_tensor, "hand-built", (3, 8, 8)), str(tmp_path / "imgs"),
           tmp_path / "a", ["conv"], k=1, num_workers=0, progress=False)
    code = ("import sys\nfrom unitlens.cli import app\nsys.argv = ['unitlens', 'atlas', 'info', sys.argv[1]]\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    assert "conv" in done.stdout and done.stdout.strip().endswith("no torch")


def test_messages_hold_no_ellipsis():
    """Messages print real paths and values: no string in the package (docstrings aside) holds a literal '…'."""
    import ast
    from pathlib import Path

    import unitlens

    found = []
    for path in Path(unitlens.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "…" in node.value \
                    and id(node) not in docstrings:
                found.append(f"{path.name}:{node.lineno}")
    assert not found


def test_fine_tuned_checkpoint_through_layers_record_and_reload(tmp_path):
    import json

    import timm
    import torch

    from unitlens.atlas import Atlas

    torch.manual_seed(0)
    tuned = tmp_path / "tuned.pth"
    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), tuned)
    model = ["--model", "timm:resnet18", "--checkpoint", str(tuned)]
    strict = runner.invoke(app, ["layers", *model])
    assert strict.exit_code == 2 and "--num-classes 10" in strict.output
    listed = runner.invoke(app, ["layers", *model, "--num-classes", "10", "--types", "Linear", "--keep-first-last",
                                 "--format", "json"])
    assert listed.exit_code == 0, listed.output
    from unitlens.zoo import enumerate_units

    n = len(enumerate_units(timm.create_model("resnet18", num_classes=10)))  # the MIS-convention layers
    assert json.loads(listed.stdout)["layers"]["rows"] == [  # the kept last layer sits just past depth 1
        {"name": "fc", "type": "Linear", "depth": n, "rel_depth": n / (n - 1), "width": 10, "rel_width": 1.0}]
    partial = runner.invoke(app, ["layers", *model, "--no-checkpoint-strict", "--types", "Linear",
                                  "--keep-first-last"])
    assert partial.exit_code == 0 and "fc.weight (10, 512) != (1000, 512)" in partial.output, partial.output

    rng = np.random.default_rng(0)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)])
    out = tmp_path / "a"
    rec = runner.invoke(app, ["record", *model, "--num-classes", "10", "--data", str(tmp_path / "imgs"), "--out",
                              str(out), "--k", "1", "--layers", "fc,layer4.1.conv2", "--workers", "0"])
    assert rec.exit_code == 0, rec.output
    atlas = Atlas(out)
    assert atlas.layer("fc").width == 10
    assert atlas.load_model().weights_hash() == atlas.manifest["config"]["weights_hash"]  # rebuilt with 10 classes
    for command in (["audit", "test", "--help"], ["audit", "prune", "--help"]):
        assert "--num-classes" in runner.invoke(app, command).output


def test_swin_layers_random_and_record(tmp_path):
    import json

    from unitlens.atlas import Atlas

    swin = ["--model", "timm:swin_tiny_patch4_window7_224", "--random"]
    listed = runner.invoke(app, ["layers", *swin, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    names = [r["name"] for r in json.loads(listed.stdout)["layers"]["rows"]]
    assert "layers.0.blocks.0.attn.qkv" in names and "layers.3.blocks.1.mlp.fc2" in names
    rng = np.random.default_rng(0)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)])
    rec = runner.invoke(app, ["record", *swin, "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "a"),
                              "--k", "1", "--layers", "layers.0.blocks.0.*", "--workers", "0"])
    assert rec.exit_code == 0, rec.output
    widths = {i.name: i.width for i in Atlas(tmp_path / "a").layers}
    assert widths["layers.0.blocks.0.attn.qkv"] == 288 and widths["layers.0.blocks.0.mlp.fc1"] == 384
