"""``MISOptions`` and ``CalibrationOptions``: every option of MIS on an atlas (``score_mis``, ``score_featviz``,
``unitlens mis``, a study's ``[mis]`` table) and of its calibration to human scores, with defaults, checks and
help."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.mis.defaults import (
    BACKEND,
    CALIBRATION_FRACTION,
    CALIBRATION_SEED,
    EXPLANATIONS,
    K_EXPL,
    N_TASKS,
    NOISE_SIMULATIONS,
    TAU,
)
from unitlens.options import Options, option


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be positive, got {value}"


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 1 else f"must be in (0, 1], got {value}"


@dataclass(frozen=True)
class MISOptions(Options):
    """How the 2-AFC tasks are built and scored, and on which layers. Neither ``device`` nor ``chunk_units``
    changes a score beyond float rounding."""

    backend: str = option(BACKEND, "Similarity backend: an embedding (offline, dreamsim, openclip:..., ...) or a "
                                   "distance on image pairs (dists, lpips-alex; n² pairs).", metavar="NAME")
    n_tasks: int = option(N_TASKS, "Tasks per unit, N.", min=1)
    k_expl: int = option(K_EXPL, "Explanations per side and task, K.", min=1)
    tau: float = option(TAU, "Temperature: p = sigmoid((Δ⁺ − Δ⁻) / tau).", check=_positive)
    layers: tuple[str, ...] | None = option(None, "Layer names or globs to score (comma-separated on the command "
                                                  "line; default: all).", metavar="NAMES")
    explanations: str = option(EXPLANATIONS[0], "What the tasks show as explanations: the natural exemplars "
                                                "(metric mis), or the units' feature visualisations from unitlens "
                                                "featviz (metric mis_featviz; the queries stay natural exemplars), "
                                                "then compared with the natural-exemplar MIS.", choices=EXPLANATIONS)
    device: str | None = option(None, "cpu, cuda, ... (default: cuda when present).", convert=str)
    write: bool = option(True, "Write the scores to the atlas's scores.parquet.")
    allow_overlap: bool = option(False, "Score a dataset of fewer than 2·N·(K+1) images anyway: each unit's top and "
                                        "bottom exemplars then share images (biased scores; the overlap is shown).")
    chunk_units: int | None = option(None, "Units per chunk of the scoring computation (bounds its memory; default: "
                                           "chosen from the sizes).", min=1, cli=False)


@dataclass(frozen=True)
class CalibrationOptions(Options):
    """Fitting tau to human per-unit scores, and the noise ceiling of those scores."""

    fraction: float = option(CALIBRATION_FRACTION, "Fraction of the human-scored units tau is fitted on.",
                             check=_fraction)
    seed: int = option(CALIBRATION_SEED, "Seed of the random fit/evaluation split and of the simulation.")
    n_trials: int | None = option(None, "Human decisions per unit for the noise ceiling (default: the CSV's "
                                        "n_trials column, if any).", min=1)
    n_sim: int = option(NOISE_SIMULATIONS, "Simulations for the noise ceiling.", min=1)
