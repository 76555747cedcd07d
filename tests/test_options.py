"""Options dataclasses (``unitlens.options``) and the command-line options generated from them."""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.core import TyperOption
from typer.main import get_command
from typer.testing import CliRunner

from unitlens.cli import app
from unitlens.cli.common import DISPLAY_OPTIONS, FORMAT, TABLE_HELP
from unitlens.cli.options import cli_flags, options_command
from unitlens.errors import BadInput
from unitlens.options import Options, option, takes_options
from unitlens.recording.options import RecordOptions


@dataclass(frozen=True)
class Toy(Options):
    n: int = option(3, "How many.", min=1, max=10)
    rate: float = option(0.5, "A rate.", min=0.0)
    mode: str = option("a", "A mode.", choices=("a", "b"))
    names: tuple[str, ...] | None = option(None, "Some names.")
    on: bool = option(False, "A switch.")
    size: int | None = option(None, "An optional size.", flag="--px", check=lambda v: None if v % 2 == 0 else "is odd")

    def validate(self) -> None:
        if self.on and self.names is None:
            raise BadInput("on needs names")


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, r"n \(--n\) must be at least 1, got 0"),
    ({"n": 11}, "at most 10"),
    ({"n": True}, "must be an integer"),
    ({"n": 2.5}, "must be an integer"),
    ({"rate": "x"}, "must be a number"),
    ({"mode": "c"}, "must be one of a, b"),
    ({"names": [1, 2]}, "list of strings"),
    ({"on": 1}, "true or false"),
    ({"size": 3}, r"size \(--px\) is odd"),
    ({"on": True}, "on needs names"),
])
def test_every_field_is_checked_when_made(kwargs, message):
    with pytest.raises(BadInput, match=message):
        Toy(**kwargs)


def test_a_device_may_be_a_torch_device():
    import torch

    assert RecordOptions(device=torch.device("cpu")).device == "cpu"


def test_values_are_brought_to_their_type():
    toy = Toy(n=4.0, rate=1, names="x, y,,z", size=4)
    assert (toy.n, toy.rate, toy.names, toy.size) == (4, 1.0, ("x", "y", "z"), 4)
    assert isinstance(toy.n, int) and isinstance(toy.rate, float)
    assert Toy.from_mapping(toy.as_dict()) == toy  # lists in the dict, tuples again when read
    assert toy.as_dict()["names"] == ["x", "y", "z"]
    assert toy.changed() == {"n": 4, "rate": 1.0, "names": ("x", "y", "z"), "size": 4}


def test_unknown_keys_name_the_nearest_option_and_where():
    with pytest.raises(BadInput, match=r"study.toml \[record\]: unknown option 'kk'; did you mean 'k'\?"):
        RecordOptions.from_mapping({"kk": 3}, "study.toml [record]")
    with pytest.raises(BadInput, match="unknown option 'nn'"):
        Toy().replace(nn=3)
    assert Toy().replace(n=5).n == 5


def test_takes_options_merges_keywords_and_documents_every_field():
    @takes_options(Toy)
    def run(x: int, options: Toy | None = None, *, verbose: bool = False) -> tuple:
        """Run something."""
        return x, options, verbose

    assert run(1)[1] == Toy()
    assert run(1, n=5)[1] == Toy(n=5)
    assert run(1, Toy(n=7), mode="b")[1] == Toy(n=7, mode="b")  # keywords override the given options
    assert run(1, options=Toy(n=7), verbose=True) == (1, Toy(n=7), True)
    with pytest.raises(BadInput, match="must be at least 1"):
        run(1, n=0)
    with pytest.raises(TypeError):
        run(1, nope=3)
    params = inspect.signature(run).parameters
    assert list(params)[:3] == ["x", "options", "verbose"]
    assert {s.name for s in Toy.specs()} <= set(params) and params["n"].default == 3
    for spec in Toy.specs():
        assert f"{spec.name} : " in run.__doc__ and spec.help in run.__doc__


def test_generated_command_has_each_field_with_its_default_and_help():
    toy_app = typer.Typer()

    @toy_app.command()
    @options_command(skip={"toy": ("rate",)})
    def go(word: str = typer.Argument(...), *, toy: Toy) -> None:
        typer.echo(f"{word} {toy!r}")

    runner = CliRunner()
    out = runner.invoke(toy_app, ["hi", "--n", "4", "--names", "p,q", "--on", "--px", "2"])
    assert out.exit_code == 0, out.output
    assert repr(Toy(n=4, names=("p", "q"), on=True, size=2)) in out.output
    bad = runner.invoke(toy_app, ["hi", "--px", "3"])
    assert bad.exit_code == 2 and "--px is odd" in bad.output
    bad = runner.invoke(toy_app, ["hi", "--on"])
    assert bad.exit_code == 2 and "on needs names" in bad.output
    params = {p.name: p for p in get_command(toy_app).params}
    assert "rate" not in params and params["n"].default == 3 and params["n"].help == "How many."


def _commands(group, path: tuple[str, ...] = ()):
    if hasattr(group, "commands"):
        for name, cmd in group.commands.items():
            yield from _commands(cmd, (*path, name))
    else:
        yield path, group


def test_every_generated_cli_option_matches_its_field():
    """Every option a command takes from an options class has that field's flags, default and help."""
    checked = 0
    for path, cmd in _commands(get_command(app)):
        groups = getattr(cmd.callback, "options_groups", {})
        params = {p.name: p for p in cmd.params}
        for cls in groups.values():
            for spec in cls.specs():
                if spec.name not in params:
                    continue  # left out of this command on purpose (only=/skip=)
                p = params[spec.name]
                assert p.help == spec.help or p.help.startswith(spec.help), (path, spec.name)
                default = ",".join(spec.default) if isinstance(spec.default, tuple) else spec.default
                assert p.default == default, (path, spec.name, p.default, default)
                assert set(p.opts + p.secondary_opts) == set(
                    o for f in cli_flags(spec) for o in f.split("/")), (path, spec.name)
                checked += 1
    assert checked >= 30


LENS_DISPLAY = {"fmt", "table", "verbose"}  # the shared display options (cli/common.py) and embed's --verbose
def test_lens_commands_take_every_option_from_an_options_class():
    """Every option of the SemanticLens commands is a field of their options class, a display option or one of the
    inputs written in the command: an option added by hand fails here."""
    found = set()
    for path, cmd in _commands(get_command(app)):
        if path[:1] != ("lens",) and path != ("plot", "lens"):
            continue
        groups = getattr(cmd.callback, "options_groups", {})
        assert groups, f"unitlens {' '.join(path)} is not generated from an options class"
        fields = {s.name for cls in groups.values() for s in cls.specs() if s.cli}
        options = {p.name for p in cmd.params if p.param_type_name == "option"}
        assert fields <= options, (path, fields - options)
        assert options - fields - LENS_DISPLAY == set(getattr(cmd.callback, "input_options", ())), path
        found.add(path)
    assert found == {("lens", "embed"), ("lens", "search"), ("lens", "label"), ("lens", "evaluate-labels"),
                     ("lens", "compare"), ("lens", "measures"), ("plot", "lens")}


INPUTS = {("mis", "score"): {"atlas"}, ("mis", "calibrate"): {"atlas", "human"}, ("mis", "ceiling"): {"human"},
          ("study", "run"): {"study_file", "entries", "out"}, ("study", "plan"): {"study_file"}}
DISPLAY = {"fmt", "table", "verbose"}  # the shared display options of cli/common.py


@pytest.mark.parametrize("path", sorted(INPUTS))
def test_mis_and_study_commands_take_only_generated_inputs_and_display_options(path):
    """Every option of these commands is a field of an options class, one of its inputs, or a shared display
    option: no option is written by hand beside the options classes."""
    commands = dict(_commands(get_command(app)))
    cmd = commands[path]
    groups = cmd.callback.options_groups
    fields = {s.name for cls in groups.values() for s in cls.specs()}
    names = {p.name for p in cmd.params}
    assert groups and names - fields - DISPLAY - {"help"} == INPUTS[path]


@pytest.mark.parametrize("path, classes", [
    (("relevance",), {"RelevanceOptions", "PredictedOptions"}),
    (("graph",), {"GraphOptions"}),
    (("audit", "alignment"), {"AuditOptions"}),
    (("audit", "test"), {"AuditTestOptions", "ModelOptions"}),
    (("audit", "prune"), {"PruneOptions", "ModelOptions"}),
])
def test_relevance_and_audit_commands_take_their_options(path, classes):
    """The relevance and audit commands get their options from their options classes (so the parity test above
    covers them), and every field meant for the command line is there."""
    cmd = dict(_commands(get_command(app)))[path]
    groups = cmd.callback.options_groups
    assert {cls.__name__ for cls in groups.values()} == classes
    params = {p.name for p in cmd.params}
    for cls in groups.values():  # (relevance: the fields PredictedOptions shares come from RelevanceOptions)
        assert {s.name for s in cls.specs() if s.cli} <= params, (path, cls.__name__)


def _names_paths(annotation) -> bool:
    return annotation is Path or any(_names_paths(a) for a in typing.get_args(annotation))


def _is_input(p: TyperOption, callback) -> bool:
    """An input option: required (``record --data``), or files or folders with no default (``plot study --out``):
    what the command reads or writes, not a setting, so no default or help that could drift from a field's. Other
    inputs are marked by the command (``cli.common.inputs``)."""
    return p.required or (_names_paths(typing.get_type_hints(callback)[p.name]) and p.default is None)


def test_every_cli_option_is_a_field_an_input_or_a_display_option():
    """No setting written by hand in a command: each option is generated from a field of one of the command's
    options classes, is one of the display options every command shares, or is an input."""
    commands = dict(_commands(get_command(app)))
    shared_help = {"--format": FORMAT.help, "--table": TABLE_HELP}
    stray, fields_seen = [], 0
    for path, cmd in commands.items():
        fields = {s.name for cls in getattr(cmd.callback, "options_groups", {}).values() for s in cls.specs()
                  if s.cli}
        for p in cmd.params:
            if not isinstance(p, TyperOption) or p.name == "help":
                continue
            if p.name in fields:  # its flags, default and help are the field's: the test above
                fields_seen += 1
            elif set(p.opts) & set(DISPLAY_OPTIONS):
                flag = next(o for o in p.opts if o in DISPLAY_OPTIONS)
                assert p.help == shared_help.get(flag, p.help), (path, flag, "is not the shared option")
            elif p.name not in getattr(cmd.callback, "input_options", ()) and not _is_input(p, cmd.callback):
                stray.append(f"unitlens {' '.join(path)} {p.opts[0]}")
    assert not stray, f"options written by hand instead of as a field of an options class: {stray}"
    assert fields_seen >= 40
