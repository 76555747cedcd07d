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
    """What print_frame writes to stdout and (after it) to stderr, both ``width`` columns wide."""
    import io

    out, err = io.StringIO(), io.StringIO()  # files, as when the output is piped
    monkeypatch.setattr(unitlens.cli.common, "console", Console(file=out, width=width, soft_wrap=True))
    monkeypatch.setattr(unitlens.cli.common, "err_console", Console(file=err, width=width, soft_wrap=True))
    unitlens.cli.common.print_frame(frame, **kwargs)
    assert "note:" not in out.getvalue()  # notes go to stderr
    return out.getvalue() + err.getvalue()


@pytest.mark.parametrize("width", [40, 80, 160])
def test_tables_fit_the_width_and_never_cut_names_or_numbers(monkeypatch, width):
    from rich.cells import cell_len

    frame = _frame()
    out = _printed(monkeypatch, frame, width, title="by layer of /a/long/path/to/an/atlas/that/is/longer/than/40",
                   name="by_layer")
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
    out = _printed(monkeypatch, frame, 44, name="layer")
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
    assert "interrupted; run the same command again to resume" in stopped.stderr and not stopped.stdout
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
    assert atlas.load_model().weights_hash() == atlas.manifest.config.weights_hash  # rebuilt with 10 classes
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


# ---------------------------------------------------------------------------------------------- every command
def _commands(command, path=()):
    """(words, click command) of every command of the CLI app."""
    if hasattr(command, "commands"):  # a group
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def _reached(function) -> list:
    """The AST of ``function`` and of every function of its module it calls, directly or through others."""
    import ast
    import inspect
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[function.__module__]))
    defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    todo, seen = [function.__name__], {}
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen[name] = defs[name]
        todo += [n.func.id for n in ast.walk(defs[name]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return list(seen.values())


def _cli_commands():
    import inspect

    import typer

    for words, command in _commands(typer.main.get_command(app)):
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
        yield " ".join(words), command, options, _reached(inspect.unwrap(command.callback))


def test_every_table_command_takes_format_and_names_its_tables():
    """A command that prints a table (print_frame, where the 80-column note comes from) takes --format; every table
    has a fixed name (a string, never derived from the title); a command with several tables takes --table NAME
    with exactly those names."""
    import ast

    checked = 0
    for words, command, options, functions in _cli_commands():
        calls = [n for f in functions for n in ast.walk(f)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print_frame"]
        if not calls:
            continue
        checked += 1
        assert "--format" in options, f"unitlens {words} prints a table but has no --format"
        names = set()
        for call in calls:
            name = next((k.value for k in call.keywords if k.arg == "name"), None)
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), \
                f"unitlens {words}: a print_frame call (line {call.lineno}) without a fixed name="
            names.add(name.value)
        table = next((p for p in command.params if "--table" in p.opts), None)
        if len(names) > 1:
            assert table is not None, f"unitlens {words} prints tables {sorted(names)} but has no --table"
        if table is not None:
            assert set(table.metavar.split("|")) == names, (words, table.metavar, names)
    assert checked >= 25


def test_messages_name_only_options_the_command_has():
    """An option named in a command's help or messages (not advice for another unitlens command) is one it has."""
    import ast
    import re

    def texts(function):  # its strings, an f-string as one text
        parts = {id(v) for n in ast.walk(function) if isinstance(n, ast.JoinedStr) for v in n.values}
        for n in ast.walk(function):
            if isinstance(n, ast.JoinedStr):
                yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values)
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in parts:
                yield n.value

    for words, command, options, functions in _cli_commands():
        for text in (t for f in functions for t in texts(f) if "unitlens " not in t):
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
                assert option in options, f"unitlens {words} names {option}, which it does not have: {text!r}"
        for param in command.params:
            for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", getattr(param, "help", None) or ""):
                assert option in options, f"unitlens {words}: the help of {param.name} names {option}"


RESUMABLE = ("record", "mis score", "lens embed", "relevance", "basis fit", "basis record", "probe", "study run")


def test_resumable_commands_say_how_to_resume_on_ctrl_c():
    """Each command that resumes where it stopped handles Ctrl-C through the one helper (common.resumable)."""
    import ast

    reached = {words: {n.func.id for f in functions for n in ast.walk(f)
                       if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
               for words, _, _, functions in _cli_commands()}
    assert {words for words in RESUMABLE if "resumable" not in reached[words]} == set()


def test_ctrl_c_during_study_run_says_rerunning_resumes(tmp_path, monkeypatch):
    import unitlens.study.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(unitlens.study.runner, "execute", interrupted)  # the first step of the first entry
    rng = np.random.default_rng(0)
    write_images(tmp_path / "imgs", [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(2)])
    study = tmp_path / "study.toml"
    study.write_text(f'name = "stopped"\ndata = "{tmp_path / "imgs"}"\n[[entry]]\nmodel = "efficientnet_lite0"\n'
                     "random = true\n")
    stopped = runner.invoke(app, ["study", "run", str(study), "--out", str(tmp_path / "out")])
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted; run the same command again to resume" in stopped.stderr and not stopped.stdout


def _exact_atlas(path, layers=("conv", "stem")):
    from unitlens import record
    from unitlens.zoo.factory import LoadedModel

    from conftest import ExactNet, to_int_tensor

    rng = np.random.default_rng(1)
    write_images(path.parent / "imgs", [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(3)])
    record(LoadedModel("exactnet", ExactNet().eval(), to_int_tensor, "hand-built", (3, 8, 8)),
           str(path.parent / "imgs"), path, list(layers), k=1, num_workers=0, progress=False)
    return path


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_errors_warnings_and_notes_go_to_stderr(tmp_path, fmt):
    missing = runner.invoke(app, ["atlas", "info", str(tmp_path / "nope"), "--format", fmt])
    assert missing.exit_code == 2 and missing.stdout == "" and "error:" in missing.stderr
    atlas = _exact_atlas(tmp_path / "a")
    (atlas / "exemplars" / "conv.safetensors").write_bytes(b"damaged")
    verify = runner.invoke(app, ["atlas", "verify", str(atlas), "--format", fmt])
    assert verify.exit_code == 1 and "1 problem(s)" in verify.stderr and "problem" not in verify.stdout
    assert "conv.safetensors" in verify.stdout  # the table


def test_verify_at_80_columns_keeps_the_check_and_its_fix(tmp_path, monkeypatch):
    import io

    atlas = _exact_atlas(tmp_path / "a")
    (atlas / "exemplars" / "conv.safetensors").write_bytes(b"damaged")
    out = io.StringIO()
    monkeypatch.setattr(unitlens.cli.common, "console", Console(file=out, width=80, soft_wrap=True))
    verify = runner.invoke(app, ["atlas", "verify", str(atlas)])
    assert verify.exit_code == 1
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "do not fit" not in verify.stderr
    header = next(line for line in text.splitlines() if "file" in line and "check" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["file", "check", "status", "detail"]
    words = " ".join(text.split())
    assert "readable" in words and "error" in words and "--force" in words  # the check, its status, the fix


def test_table_option_prints_one_table_and_csv_as_one_plain_file(tmp_path):
    import io
    import json

    import pandas as pd

    from unitlens.atlas import Atlas

    atlas = _exact_atlas(tmp_path / "a")
    summary = Atlas(atlas).summary()
    plain = runner.invoke(app, ["atlas", "info", str(atlas), "--format", "csv", "--table", "layers"])
    assert plain.exit_code == 0, plain.output
    assert not plain.stdout.startswith("#")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(plain.stdout)), summary, check_dtype=False)
    one = json.loads(runner.invoke(app, ["atlas", "info", str(atlas), "--format", "json", "--table", "atlas"]).stdout)
    assert list(one) == ["atlas"] and one["atlas"]["rows"][0]["status"] == "complete"
    shown = runner.invoke(app, ["atlas", "info", str(atlas), "--table", "layers"])
    assert shown.exit_code == 0 and "conv" in shown.stdout
    bad = runner.invoke(app, ["atlas", "info", str(atlas), "--table", "nope"])
    assert bad.exit_code == 2 and "atlas, layers" in bad.output


def test_long_names_wrap_at_80_columns_so_key_columns_stay(monkeypatch):
    """A table whose first column holds long layer names keeps its key columns at 80 columns: the names wrap after
    dots and underscores (whole when joined), the other columns give way first."""
    import pandas as pd

    names = [f"encoder.stages.{i}.blocks.{i + 10}.attention_output_projection_with_a_long_name" for i in range(3)]
    frame = pd.DataFrame({"layer": names, "type": ["Linear"] * 3, "units": [768, 768, 3072],
                          "scored": [760, 768, 3000], "MIS mean": [0.81234, 0.7, 0.9], "MIS p5": [0.6, 0.55, 0.7],
                          "MIS p95": [0.95, 0.9, 0.99], "acc mean": [0.8, 0.7, 0.9]})
    out = _printed(monkeypatch, frame, 80, name="by_layer", key=("MIS mean", "MIS p5", "MIS p95"))
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    header = " ".join(line for line in lines if line.startswith("┃"))
    assert all(word in header for word in ("MIS", "mean", "p5", "p95"))
    dropped = out.split("do not fit in 80 columns: ")[1].split(" (")[0].split(", ") if "do not fit" in out else []
    assert not {"MIS mean", "MIS p5", "MIS p95", "layer"} & set(dropped)
    cells, rows = [], []
    for line in lines:
        if line.startswith("│"):
            cells.append(line.split("│")[1].strip())
        elif line.startswith(("├", "└")) and cells:
            rows.append("".join(cells))
            cells = []
    assert rows == names  # every name whole once its lines are joined
    for value in ("0.8123", "0.55", "0.99"):
        assert value in out.split()
    unwrapped = _printed(monkeypatch, frame, 80, name="by_layer")  # without key columns: they are dropped
    assert "MIS p95" in unwrapped.split("do not fit")[1]
