"""The ablation of the SemanticLens paper's supplementary D.4 on an atlas with a probe set: prompt templates vs the bare
concept, m (concept examples / CLIP-Dissect's top images) in {5, 10, 30, 50}, and activation pooling mean vs max,
each judged by the held-out faithfulness of ``unitlens lens evaluate-labels`` (same split, same judge: the
held-out images' activations of the probe pass ``--probe``, pooled as the atlas was).

- SemanticLens: θ_m = the mean of a unit's first m concept examples, from one ``lens embed --m 50`` (made in a copy
  of the atlas under ``--work``); max pooling: the exemplars of a second record pass with ``--spatial max`` (same
  model, data and layers; it reuses the copied image embeddings).
- CLIP-Dissect: m = its top-set size; max pooling: its ranking comes from a second probe pass with ``--spatial max``.

    python scripts/label_ablation.py ATLAS [--probe default] [--backend offline-vl] [--work DIR] [--seed 0]

The text concepts are the probe set's concept names (``--concepts probe``); ``bare`` embeds "<c>" alone.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.atlas import Atlas
from unitlens.lens import embed_units
from unitlens.lens.probes import TEMPLATES
from unitlens.lens.store import LensStore
from unitlens.probe.defaults import GOOD_AUC, HOLDOUT, PROBE_NAME, SEED
from unitlens.probe.faithfulness import held_out_scores
from unitlens.probe.labellers import NO_LABEL, LabelContext, labeller
from unitlens.probe.split import holdout_split
from unitlens.probe.store import ProbeStore

BARE = ("{}",)


def lens_copy(atlas: Atlas, out: Path, backend: str, m: int, spatial: str) -> Atlas:
    """``atlas`` (or, for ``spatial`` max, a new record of its model, data and layers) embedded with ``m``
    examples, under ``out``; image embeddings are copied, not recomputed."""
    if out.exists():
        copy = Atlas(out)
    elif spatial == atlas.manifest.config.spatial:
        shutil.copytree(atlas.path, out, ignore=shutil.ignore_patterns("probe", ".lock"))
        copy = Atlas(out)
    else:
        from unitlens.recording import record

        cfg = atlas.manifest.config
        record(atlas.load_model(), atlas.manifest.dataset.spec, out, atlas.layers, k=cfg.k, spatial=spatial,
               tokens=cfg.tokens)
        shutil.copytree(atlas.derived_path("embeddings"), Atlas(out).derived_path("embeddings"), dirs_exist_ok=True)
        copy = Atlas(out)
    embed_units(copy, backend, m=m, progress=True)
    return copy


def theta_by_m(store: LensStore, layers: list[str], m: int) -> dict:
    """θ from each unit's first m concept examples (the examples are stored best first)."""
    out = {}
    for layer in layers:
        data = store.read_layer(layer)
        mask = data.mask[:, :m]
        out[layer] = (data.examples[:, :m] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    return out


def summary_row(units: pd.DataFrame, **config) -> dict:
    labelled = units["label"] != NO_LABEL
    auc = units.loc[labelled, "auc"].dropna()
    return {**config, "labelled_share": float(labelled.mean()), "mean_auc": float(auc.mean()),
            "median_auc": float(auc.median()), f"share_ge_{GOOD_AUC:g}": float((auc >= GOOD_AUC).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--probe", default=PROBE_NAME)
    parser.add_argument("--backend", default="offline-vl")
    parser.add_argument("--ms", default="5,10,30,50")
    parser.add_argument("--work", type=Path, default=None, help="where the m=50 / max-pooling copies go (kept)")
    parser.add_argument("--holdout", type=float, default=HOLDOUT)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    ms = [int(m) for m in args.ms.split(",")]
    atlas = Atlas(args.atlas)
    work = args.work or Path(tempfile.mkdtemp(prefix="label-ablation-"))
    work.mkdir(parents=True, exist_ok=True)
    probe = ProbeStore.open(atlas, args.probe)
    layers = probe.layers
    label_rows, held_rows = holdout_split(probe.membership, args.holdout, args.seed)
    if f"{args.probe}-max" not in ProbeStore.names(atlas):
        from unitlens.probe.activations import record_probe

        record_probe(atlas, probe.meta["spec"], layers=layers, name=f"{args.probe}-max",
                     columns=probe.meta.get("columns"), spatial="max")
    probe_max = ProbeStore.open(atlas, f"{args.probe}-max")
    assert list(probe_max.images["path"]) == list(probe.images["path"]), "the two probe passes read other images"
    if (probe.path / "embeddings").is_dir():  # same images: their embeddings carry over
        shutil.copytree(probe.path / "embeddings", probe_max.path / "embeddings", dirs_exist_ok=True)
    rows = []
    for pooling in ("mean", "max"):
        copy = lens_copy(atlas, work / f"lens-{pooling}", args.backend, max(ms), pooling)
        lens = LensStore.open(copy, args.backend)
        for templates, name in ((TEMPLATES, "templates"), (BARE, "bare")):
            for m in ms:
                lab = labeller("semanticlens", templates=templates, theta=theta_by_m(lens, layers, m))
                # labels from the copy's lens store, judged on the original atlas's probe images
                ctx = LabelContext(_retarget(probe, copy), label_rows, "probe", args.backend)
                units = held_out_scores(probe, lab.label(ctx, layers), held_rows)
                rows.append(summary_row(units, method="semanticlens", prompts=name, m=m, pooling=pooling))
            for m in ms:
                store = probe if pooling == "mean" else probe_max
                ctx = LabelContext(store, label_rows, "probe", args.backend)
                labels = labeller("clip-dissect", templates=templates, top_k=m).label(ctx, layers)
                units = held_out_scores(probe, labels, held_rows)
                rows.append(summary_row(units, method="clip-dissect", prompts=name, m=m, pooling=pooling))
            print(f"done: {pooling} pooling, {name}", flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 120, "display.max_rows", 200):
        print(f"held-out faithfulness over {', '.join(layers)} ({len(label_rows)} labelling / {len(held_rows)} "
              f"held-out probe images, seed {args.seed}, backend {args.backend})")
        print(table.round(3).to_string(index=False))
    table.to_csv(work / "ablation.csv", index=False)
    print(f"wrote {work / 'ablation.csv'}")


def _retarget(probe: ProbeStore, atlas: Atlas) -> ProbeStore:
    """The probe set seen from another atlas of the same model and layers (for its lens store); the copy made
    by ``lens_copy`` shares the probe set's identity fields except the exemplars."""
    view = ProbeStore.__new__(ProbeStore)
    view.__dict__.update(probe.__dict__)
    view.atlas = atlas
    return view


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
