"""``plot_study(dir, out)``: the MIS paper's comparative figures from a study, gathered here and drawn by
``unitlens.report.study_plots``; ``study_figures_data`` returns the tables and correlations they show."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.errors import BadInput, NotComputed
from unitlens.options import takes_options
from unitlens.study.figure_options import StudyPlotOptions
from unitlens.study.study import Study


@dataclass
class StudyFigureData:
    """What the study figures show."""

    table: pd.DataFrame  # the study table
    units: pd.DataFrame  # scored units: entry, layer, type, depth, rel_depth, rel_width, mis
    layers: pd.DataFrame  # per entry and layer: entry, layer, type, depth, rel_depth, rel_width, mis_mean, units
    correlation: dict = field(default_factory=dict)  # MIS mean vs accuracy over entries: n, pearson, spearman
    training: pd.DataFrame | None = None  # checkpoint entries: run, epoch, entry, mis_mean, accuracy
    training_correlation: dict = field(default_factory=dict)  # over epochs >= 1 (paper: "ignoring the first")
    change: pd.DataFrame | None = None  # per layer and epoch: layer, type, depth, epoch, change (vs previous epoch)
    epoch: int | None = None  # the epoch of the per-layer change figure


def correlation(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson's and Spearman's r (with p-values) of paired finite values; empty below three pairs."""
    from scipy import stats

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": int(len(x))}
    p, s = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return {"n": int(len(x)), "pearson": float(p.statistic), "pearson_p": float(p.pvalue),
            "spearman": float(s.statistic), "spearman_p": float(s.pvalue)}


def study_figures_data(study: Study | str | Path, epoch: int | None = None) -> StudyFigureData:
    """Gather the study table, every scored unit's MIS and the training tables (see ``StudyFigureData``)."""
    from unitlens.mis.scoring import STATUS_SCORED, load_scores

    study = study if isinstance(study, Study) else Study.load(study)
    table = study.summary()
    table = table[table["status"] != "removed"].reset_index(drop=True)  # entries the study file no longer has
    parts = []
    for row in table.itertuples(index=False):
        if pd.isna(row.mis_backend):
            continue
        frame = load_scores(study.atlas(row.entry), row.mis_backend)
        frame = frame[frame["status"] == STATUS_SCORED]
        parts.append(frame[["layer", "type", "depth", "rel_depth", "rel_width", "mis"]].assign(entry=row.entry))
    if not parts:
        raise NotComputed(f"no entry of study {study.path} has MIS scores yet; run its mis step (steps = [\"record\", "
                          "\"mis\"]) with unitlens study run")
    units = pd.concat(parts, ignore_index=True)
    layers = (units.groupby(["entry", "layer"], sort=False)
              .agg(type=("type", "first"), depth=("depth", "first"), rel_depth=("rel_depth", "first"),
                   rel_width=("rel_width", "first"), mis_mean=("mis", "mean"), units=("mis", "size"))
              .reset_index())
    data = StudyFigureData(table=table, units=units, layers=layers,
                           correlation=correlation(table["accuracy"].to_numpy(float, na_value=np.nan),
                                                   table["mis_mean"].to_numpy(float, na_value=np.nan)))
    trained = table[table["epoch"].notna() & table["mis_mean"].notna()].copy()
    if trained["epoch"].nunique() >= 2:
        trained["run"] = [str(Path(c).parent.name) if isinstance(c, str) else m
                          for c, m in zip(trained["checkpoint"], trained["model"])]
        longest = trained["run"].value_counts().index[0]  # the run with the most checkpoints
        run = trained[trained["run"] == longest].sort_values("epoch")
        data.training = run[["run", "epoch", "entry", "mis_mean", "mis_p5", "mis_p95", "accuracy"]].reset_index(
            drop=True)
        later = run[run["epoch"] > run["epoch"].min()]
        data.training_correlation = correlation(later["accuracy"].to_numpy(float, na_value=np.nan),
                                                later["mis_mean"].to_numpy(float, na_value=np.nan))
        per_layer = layers[layers["entry"].isin(run["entry"])].merge(run[["entry", "epoch"]], on="entry")
        wide = per_layer.pivot_table(index=["layer", "type", "depth"], columns="epoch", values="mis_mean")
        epochs = list(wide.columns)
        change = wide.diff(axis=1).drop(columns=epochs[0]).reset_index().melt(
            id_vars=["layer", "type", "depth"], var_name="epoch", value_name="change")
        data.change = change.sort_values(["epoch", "depth"]).reset_index(drop=True)
        chosen = epoch if epoch is not None else epochs[1]
        if chosen not in epochs[1:]:
            raise BadInput(f"epoch {chosen} has no earlier epoch to compare with in run {longest}; choose one of "
                           f"{', '.join(str(int(e)) for e in epochs[1:])}")
        data.epoch = int(chosen)
    return data


@takes_options(StudyPlotOptions)
def plot_study(study: Study | str | Path, out: str | Path | None = None,
               options: StudyPlotOptions | None = None) -> list[Path]:
    """Write the study figures into ``out``.

    Parameters
    ----------
    study
        A study with MIS scores (``run_study``), or its folder.
    out
        The folder to write the PNG files to (default: the study's ``figures`` folder).
    options
        The epoch of a checkpoint study's change figure and the depth and width bins (``StudyPlotOptions``;
        keyword arguments override its fields).

    Returns
    -------
    list of Path
        The files written.
    """
    assert options is not None  # takes_options fills it
    from unitlens.report.study_plots import plot_study_figures

    study = study if isinstance(study, Study) else Study.load(study)
    data = study_figures_data(study, options.epoch)
    paths = plot_study_figures(data.table, data.units, data.layers, out or study.folder.figures, title=study.name,
                               correlation=data.correlation, training=data.training,
                               training_correlation=data.training_correlation, change=data.change, epoch=data.epoch,
                               depth_bins=options.depth_bins, width_bins=options.width_bins)
    if data.table["mis_featviz_mean"].notna().any():  # entries with the featviz step: both kinds of explanation
        from unitlens.report.featviz_plots import plot_study_explanations

        paths.append(plot_study_explanations(data.table, Path(out or study.folder.figures) / "study_featviz.png",
                                             title=study.name))
    return paths
