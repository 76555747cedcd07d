"""``load_spec(path)``: a study file (TOML) read, checked and expanded into entries, before any work is done.

The file names the data, the layer selection, the steps and their options at the top level, and one ``[[entry]]``
table per model; an entry overrides any top-level key (step tables are merged key by key). An entry's
``checkpoints`` glob expands to one entry per file in natural order (``epoch_2`` before ``epoch_10``). Step tables
are the options of the steps, checked against their options classes (``Options.from_mapping``: an unknown key names
the closest option, a value of the wrong type or out of range is refused): ``[record]`` -> ``RecordOptions``,
``[mis]`` -> ``MISOptions``, ``[featviz]`` -> ``FeatvizOptions`` (its ``layers`` are needed) and the
``MISOptions`` of its scoring, ``[lens]`` -> ``LensStepOptions`` (the fields of ``EmbedOptions`` and
``MeasuresOptions``). Options the study sets itself (the record's layers and ``force``, whether MIS writes) are
refused. Paths (data folders, checkpoints, accuracy folders) are relative to the folder the command runs in, like
the CLI's options, and are stored resolved.

Accuracy (the model's classification accuracy, for MIS-vs-accuracy figures) is ``accuracy = 0.75`` (given),
``accuracy = "sidecar"`` (the ``accuracy`` of the checkpoint's JSON sidecar, ``epoch_03.pt`` -> ``epoch_03.json``;
the default for checkpoints that have one), or ``accuracy = "path/to/folder"`` (top-1 measured by the study on a
labelled image folder whose sub-folders name the classes by index or name).
"""
from __future__ import annotations

import glob
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unitlens.atlas.files import safe_name
from unitlens.errors import BadInput, MissingFile
from unitlens.options import Options, refuse_unknown
from unitlens.study.defaults import DEFAULT_STEPS, SHARE_EMBEDDINGS, STEPS, THREADS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

LAYER_KEYS = ("layers", "types", "exclude", "keep_first_last")
OVERRIDABLE = ("data", *LAYER_KEYS, "steps", "accuracy", *STEPS)
TOP_KEYS = ("name", "share_embeddings", "threads", "entry", *OVERRIDABLE)
ENTRY_KEYS = ("name", "model", "random", "checkpoint", "checkpoints", "epoch", *OVERRIDABLE)
SIDECAR = "sidecar"
# options and parameters the runner sets itself, so a study file cannot
RUNNER_SET = {
    "record": {"layers", "force"},
    "mis": {"write", "explanations"},
    "lens": {"atlas", "model", "progress", "write", "force"},
    "featviz": {"write", "explanations"},
}


@dataclass(frozen=True)
class Entry:
    """One model of a study, fully resolved: what to load, on which data and layers, which steps with which options."""

    name: str
    model: str
    random: bool = False
    checkpoint: str | None = None
    epoch: int | None = None
    accuracy: float | None = None
    accuracy_source: str = ""  # "given", "sidecar <file>", "measured on <folder>", or "" (none)
    accuracy_folder: str | None = None  # measured by the study's accuracy step
    data: str = "demo"
    layers: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    keep_first_last: bool = False
    steps: tuple[str, ...] = DEFAULT_STEPS
    options: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("layers", "types", "exclude", "steps"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Entry":
        d = dict(d)
        for key in ("layers", "types", "exclude", "steps"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def run_steps(self) -> tuple[str, ...]:
        """The steps the runner executes, in order: ``accuracy`` (after ``record``) when measured on a folder."""
        steps = [s for s in STEPS if s in self.steps]
        if self.accuracy_folder:
            steps.insert(1, "accuracy")
        return tuple(steps)


@dataclass(frozen=True)
class StudySpec:
    """A parsed study file: its name, the parsed TOML, its entries, and the torch threads of every step."""

    name: str
    path: Path
    table: dict
    entries: tuple[Entry, ...]
    share_embeddings: bool = SHARE_EMBEDDINGS
    threads: int = THREADS

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise BadInput(f"study '{self.name}' has no entry '{name}'; it has {', '.join(e.name for e in self.entries)}")


def read_toml(path: str | Path) -> dict:
    """The parsed TOML of a study file; an unreadable file is an error naming the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"study file {path} does not exist; give the path of a .toml study file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read study file {path}: {err}; fix the TOML there (see README, Studies)") from err


def natural_key(text: str) -> list:
    """Sort key that orders digit runs by value: ``epoch_2`` < ``epoch_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def step_classes(step: str) -> tuple[type[Options], ...]:
    """The options classes of a step's table."""
    from unitlens.featviz.options import FeatvizOptions
    from unitlens.lens.options import LensStepOptions
    from unitlens.mis.options import MISOptions
    from unitlens.recording.options import RecordOptions

    return {"record": (RecordOptions,), "mis": (MISOptions,), "featviz": (FeatvizOptions, MISOptions),
            "lens": (LensStepOptions,)}.get(step, ())


def step_options(step: str, table: Mapping[str, Any], where: str = "") -> tuple[Options, ...]:
    """The options of a step's table, one per class of ``step_classes(step)``: a key goes to every class that has
    it (a ``[featviz]`` table's ``layers`` and ``device`` serve the visualisations and their MIS)."""
    classes = step_classes(step)
    refuse_unknown(table, list(dict.fromkeys(s.name for c in classes for s in c.specs())), where)
    return tuple(c.from_mapping({k: v for k, v in table.items() if k in {s.name for s in c.specs()}}, where)
                 for c in classes)


def _check_options(where: str, table_name: str, table: Any) -> dict:
    """``table`` (the TOML table ``[table_name]``) checked against its step's options (see the module doc)."""
    where = f"{where}, [{table_name}] table"
    step = table_name.rpartition(".")[2]
    if not isinstance(table, dict):
        raise BadInput(f"{where}: must be a table of options, got {table!r}")
    known = {s.name for c in step_classes(step) for s in c.specs()} - RUNNER_SET[step]
    for key in table:
        if key in known:
            continue
        if key in OVERRIDABLE or key in TOP_KEYS:
            raise BadInput(f"{where}: unknown option '{key}'; '{key}' belongs to the [{table_name}] table because it "
                           f"comes after that header: write {'top-level' if '.' not in table_name else 'entry'} "
                           "keys before the first table")
        if key in RUNNER_SET[step]:
            raise BadInput(f"{where}: option '{key}' is set by the study itself; remove it")
    step_options(step, table, where)
    return dict(table)


def _string_list(where: str, key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where}: '{key}' must be a list of strings (or one comma-separated string), got {value!r}")
    return tuple(value)


def _check_keys(where: str, table: dict, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise BadInput(f"{where}: unknown key '{key}'; valid keys are {', '.join(sorted(allowed))}")


def check_model(where: str, model: Any) -> str:
    """A model name of any ``--model`` form that can be known to exist without loading it; else an error."""
    from unitlens.zoo.factory import OFFLINE_MODELS, source_of, split_options

    if not isinstance(model, str) or not model:
        raise BadInput(f"{where}: 'model' must be a model name (efficientnet_lite0, timm:<name>, torchvision:<name> "
                       "or a saved module file)")
    if Path(model).suffix in {".pt", ".pth", ".ts", ".jit"}:
        if not Path(model).is_file():
            raise MissingFile(f"{where}: model file {model} does not exist")
        return str(Path(model).resolve())
    try:
        base, _ = split_options(model)
    except BadInput as err:
        raise BadInput(f"{where}: {err}") from err
    prefix, rest = source_of(base)
    if prefix == "offline" and rest not in OFFLINE_MODELS:
        raise BadInput(f"{where}: unknown model '{model}'; use efficientnet_lite0|1|2, timm:<name>, "
                       "torchvision:<name> or a saved module file")
    if prefix == "timm":
        from unitlens.zoo.timm_names import check_timm_name

        try:
            check_timm_name(rest)
        except BadInput as err:
            raise BadInput(f"{where}: {err}") from err
    elif prefix == "torchvision":
        import torchvision

        if rest not in torchvision.models.list_models():
            raise BadInput(f"{where}: torchvision has no model '{rest}' (see torchvision.models.list_models())")
    elif prefix != "offline":
        raise BadInput(f"{where}: unknown model source '{prefix}' in '{model}'; use efficientnet_lite0|1|2, "
                       "timm:<name>, torchvision:<name> or a saved module file")
    return model


def default_name(model: str, random: bool, checkpoint: str | None) -> str:
    """``timm:resnet18`` + random -> ``resnet18-random``; a checkpoint adds its file stem."""
    from unitlens.zoo.factory import MODEL_FILE_SUFFIXES

    base = model.partition("?")[0]
    stem = Path(base).stem if Path(base).suffix in MODEL_FILE_SUFFIXES else base.split(":", 1)[-1]
    parts = [stem.replace("/", "_")] + (["random"] if random else []) + ([Path(checkpoint).stem] if checkpoint else [])
    return safe_name("-".join(parts), default="entry", hashed=False)


def _sidecar(checkpoint: str) -> Path:
    return Path(checkpoint).with_suffix(".json")


def _accuracy(where: str, value: Any, checkpoint: str | None) -> tuple[float | None, str, str | None, int | None]:
    """(accuracy, source, folder to measure on, epoch from a sidecar) of an entry's ``accuracy`` value."""
    sidecar = _sidecar(checkpoint) if checkpoint else None
    if value is None and sidecar is not None and sidecar.is_file():
        value = SIDECAR
    if value is None:
        return None, "", None, None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadInput(f"{where}: 'accuracy' is a number, \"sidecar\" or a labelled image folder; got {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value <= 1:
            raise BadInput(f"{where}: accuracy {value} is not a fraction between 0 and 1 (0.75 means 75 %)")
        return float(value), "given", None, None
    if value == SIDECAR:
        if sidecar is None or not sidecar.is_file():
            raise MissingFile(f"{where}: accuracy = \"sidecar\" needs {sidecar or 'a checkpoint with a .json sidecar'}"
                              "; give the accuracy as a number or a labelled folder instead")
        try:
            side = json.loads(sidecar.read_text())
        except ValueError as err:
            raise BadInput(f"{where}: sidecar {sidecar} is not JSON ({err})") from err
        if not isinstance(side.get("accuracy"), (int, float)):
            raise BadInput(f"{where}: sidecar {sidecar} has no numeric 'accuracy'")
        epoch = side.get("epoch")
        return float(side["accuracy"]), f"sidecar {sidecar.name}", None, epoch if isinstance(epoch, int) else None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise MissingFile(f"{where}: accuracy folder {value} does not exist; give a labelled image folder "
                          "(sub-folders named by class index or name), a number or \"sidecar\"")
    return None, f"measured on {folder.resolve()}", str(folder.resolve()), None


def _epoch_from_stem(path: str) -> int | None:
    digits = re.findall(r"\d+", Path(path).stem)
    return int(digits[-1]) if digits else None


def _data(where: str, value: Any, check: bool = True) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{where}: 'data' must be a --data spec ('demo', an image folder or a .txt/.csv list)")
    if value == "demo" or not check:  # a plan reads no data: the folder may be a placeholder
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise MissingFile(f"{where}: dataset '{value}' does not exist: give 'demo', an image folder or a file list")
    return str(path.resolve())


def _entries(where: str, top: dict, raw: dict, check_data: bool = True) -> list[Entry]:
    """The entries one ``[[entry]]`` table stands for (several with a ``checkpoints`` glob)."""
    _check_keys(where, raw, ENTRY_KEYS)
    merged = {k: raw.get(k, top.get(k)) for k in OVERRIDABLE if k not in STEPS}
    model = check_model(where, raw.get("model"))
    random = raw.get("random", False)
    if not isinstance(random, bool):
        raise BadInput(f"{where}: 'random' is true or false, got {random!r}")
    if "checkpoint" in raw and "checkpoints" in raw:
        raise BadInput(f"{where}: give either 'checkpoint' (one file) or 'checkpoints' (a glob), not both")
    if "checkpoints" in raw:
        pattern = raw["checkpoints"]
        if not isinstance(pattern, str):
            raise BadInput(f"{where}: 'checkpoints' is a glob such as \"runs/x/epoch_*.pt\", got {pattern!r}")
        files = sorted((p for p in glob.glob(str(Path(pattern).expanduser())) if Path(p).is_file()), key=natural_key)
        if not files:
            raise BadInput(f"{where}: checkpoint glob '{pattern}' matches no file (relative paths start in "
                           f"{Path.cwd()}); fix the pattern or train first")
        checkpoints: list[str | None] = [str(Path(f).resolve()) for f in files]
    elif "checkpoint" in raw:
        if not isinstance(raw["checkpoint"], str) or not Path(raw["checkpoint"]).expanduser().is_file():
            raise MissingFile(f"{where}: checkpoint {raw['checkpoint']!r} does not exist")
        checkpoints = [str(Path(raw["checkpoint"]).expanduser().resolve())]
    else:
        checkpoints = [None]
    if random and checkpoints != [None]:
        raise BadInput(f"{where}: 'random' and a checkpoint exclude each other (the checkpoint sets the weights)")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or safe_name(name, hashed=False) != name):
        raise BadInput(f"{where}: name {name!r} is not a file-name-safe name; use letters, digits, '.', '_' and '-'")
    steps = merged.get("steps")
    steps = tuple(steps) if steps is not None else DEFAULT_STEPS
    if not isinstance(merged.get("steps", []), (list, type(None))) or any(s not in STEPS for s in steps):
        raise BadInput(f"{where}: steps must be a list of {', '.join(STEPS)}, got {merged.get('steps')!r}")
    if "record" not in steps:
        raise BadInput(f"{where}: steps must include 'record' (every other step reads the atlas it writes)")
    keep = merged.get("keep_first_last") or False
    if not isinstance(keep, bool):
        raise BadInput(f"{where}: 'keep_first_last' is true or false, got {keep!r}")
    for step in STEPS:
        if step in raw:
            _check_options(where, f"entry.{step}", raw[step])
    options = {step: {**top.get(step, {}), **raw.get(step, {})} for step in STEPS}
    for step in (s for s in steps if step_classes(s)):  # as the step gets them: checks across options see both
        step_options(step, options[step], f"{where}, [{step}] and [entry.{step}] tables")
    data = _data(where, merged.get("data") or "demo", check_data)
    out = []
    for checkpoint in checkpoints:
        label = f"{where} ({Path(checkpoint).name})" if checkpoint and len(checkpoints) > 1 else where
        accuracy, source, folder, side_epoch = _accuracy(label, raw.get("accuracy", top.get("accuracy")), checkpoint)
        epoch = raw.get("epoch")
        if epoch is not None and (not isinstance(epoch, int) or len(checkpoints) > 1):
            raise BadInput(f"{where}: 'epoch' is one integer and only for a single model (a checkpoint glob takes "
                           "each file's epoch from its sidecar or name)")
        if epoch is None and checkpoint is not None:
            epoch = side_epoch if side_epoch is not None else _epoch_from_stem(checkpoint)
        if name is None:
            entry_name = default_name(model, random, checkpoint)
        else:
            entry_name = f"{name}-{safe_name(Path(checkpoint).stem, hashed=False)}" \
                if checkpoint is not None and len(checkpoints) > 1 else name
        out.append(Entry(
            name=entry_name, model=model, random=random, checkpoint=checkpoint, epoch=epoch, accuracy=accuracy,
            accuracy_source=source, accuracy_folder=folder, data=data,
            layers=_string_list(where, "layers", merged.get("layers")),
            types=_string_list(where, "types", merged.get("types")),
            exclude=_string_list(where, "exclude", merged.get("exclude")), keep_first_last=keep,
            steps=tuple(s for s in STEPS if s in steps), options={s: options[s] for s in STEPS if s in steps}))
    return out


def parse_spec(table: dict, path: str | Path = "study.toml", check_data: bool = True) -> StudySpec:
    """Check and expand a parsed study file (see the module doc); every error names the entry and the fix.
    ``check_data=False`` (a plan): data folders need not exist yet."""
    path = Path(path)
    _check_keys(f"study file {path}", table, TOP_KEYS)
    name = table.get("name", path.stem)
    if not isinstance(name, str) or safe_name(name, hashed=False) != name:
        raise BadInput(f"study file {path}: name {name!r} is not a file-name-safe name; use letters, digits, '.', "
                       "'_' and '-'")
    share = table.get("share_embeddings", SHARE_EMBEDDINGS)
    if not isinstance(share, bool):
        raise BadInput(f"study file {path}: share_embeddings is true or false, got {share!r}")
    threads = table.get("threads", THREADS)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise BadInput(f"study file {path}: 'threads' is a whole number of torch threads >= 1, got {threads!r}")
    for step in STEPS:
        if step in table:
            _check_options(f"study file {path}", step, table[step])
    raw_entries = table.get("entry")
    if not isinstance(raw_entries, list) or not raw_entries or not all(isinstance(e, dict) for e in raw_entries):
        raise BadInput(f"study file {path} has no [[entry]] tables; add one per model, e.g. [[entry]] model = "
                       "\"efficientnet_lite0\"")
    entries: list[Entry] = []
    where_of: dict[str, str] = {}
    for i, raw in enumerate(raw_entries, start=1):
        label = raw.get("name") or raw.get("model") or "?"
        where = f"study file {path}, entry {i} ({label})"
        for entry in _entries(where, table, raw, check_data):
            if entry.name in where_of:
                raise BadInput(f"{where} and {where_of[entry.name]} are both called '{entry.name}'; give one of "
                               "them another name = \"...\"")
            where_of[entry.name] = where
            entries.append(entry)
    return StudySpec(name=name, path=path, table=table, entries=tuple(entries), share_embeddings=share,
                     threads=threads)


def load_spec(path: str | Path, check_data: bool = True) -> StudySpec:
    """Read, check and expand the study file at ``path``."""
    return parse_spec(read_toml(path), path, check_data)
