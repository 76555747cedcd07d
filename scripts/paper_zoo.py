"""Write the MIS paper's model zoo as a study file: its 825 timm models by tagged name, repaired against timm.

Appendix F of the MIS paper (Zimmermann et al., 2024) lists its timm models by tagged name; the paper's text
extraction damaged some of them (``pvt.v2.b2.li.in1k`` is ``pvt_v2_b2_li.in1k``, ``efficientvit_b2_r224.in1k`` is
``efficientvit_b2.r224_in1k``, ``mixer_116_224`` is ``mixer_l16_224``). Each name is repaired against
``timm.list_models(pretrained=True)`` in three steps, and the step that repaired it is kept beside the entry:

1. ``exact``: the name is timm's;
2. ``separators``: ``.`` and ``_`` read as one separator (and ``l`` as ``1``), the one timm name that then matches;
3. ``nearest``: the timm name most similar to it (difflib ratio on the separator-folded names, at least 0.9 and
   ahead of the next one by 0.01); these are judgement calls, marked in the file.

Names that none of these repair are listed (and left out of the file). Names that repair onto the same timm model
appear once. The paper's 10 other models are added where torchvision or timm provide them.

    python scripts/paper_zoo.py --paper PAPER.txt [--out studies/paper-000-zoo.toml]
"""
from __future__ import annotations

import argparse
import collections
import difflib
import re
from pathlib import Path

HEADER = "825 models from timm (Wightman, 2019):"
NEAREST_MIN, NEAREST_MARGIN = 0.9, 0.01

# the paper's other models (the 9 of Zimmermann et al. 2023 and one more) that torchvision or timm provide
OTHER_MODELS = [
    ("torchvision:googlenet", "GoogLeNet"),
    ("torchvision:resnet50", "ResNet-50"),
    ("timm:resnet50_clip.openai", "CLIP ResNet-50 (the image tower)"),
    ("torchvision:densenet201", "the paper's 'DenseNet-101', a name no DenseNet has; DenseNet-201 here"),
    ("torchvision:wide_resnet50_2", "WideResNet-50"),
    ("timm:vit_base_patch32_clip_quickgelu_224.openai", "CLIP ViT-B/32 (the image tower, QuickGELU as trained)"),
    ("torchvision:vit_b_32", "ViT-B/32"),
]
NOT_PROVIDED = ["Robust (L2) ResNet-50 (two of them): neither timm nor torchvision has them"]


def paper_names(text: str) -> list[str]:
    """The model names of appendix F, in the paper's order (line breaks inside a name joined)."""
    body = text.split(HEADER, 1)[1].split("G ADDITIONAL RESULTS", 1)[0]
    body = re.sub(r"\s*\n\s*", "", body)
    return [n.strip().rstrip(".") for n in body.split(",") if n.strip()]


def _fold(name: str) -> str:
    return name.replace(".", "_").replace("l", "1")


def repair(name: str, known: list[str], folded: dict[str, list[str]]) -> tuple[str | None, str, str]:
    """(timm name or None, how it was repaired, the runner-up for a nearest repair)."""
    if name in known:
        return name, "exact", ""
    same = folded.get(_fold(name), [])
    if len(same) == 1:
        return same[0], "separators", ""
    scored = sorted(((difflib.SequenceMatcher(None, _fold(name), key).ratio(), key) for key in folded),
                    reverse=True)
    (best, key), (second, other) = scored[0], scored[1]
    if best >= NEAREST_MIN and best - second >= NEAREST_MARGIN and len(folded[key]) == 1:
        return folded[key][0], "nearest", f"{best:.3f} vs {folded[other][0]} {second:.3f}"
    return None, "unrepaired", f"nearest: {folded[key][0]} {best:.3f}, {folded[other][0]} {second:.3f}"


def study_file(repaired: list[tuple[str, str, list[str]]], unrepaired: list[tuple[str, str]], timm_version: str,
               n_listed: int) -> str:
    """The study TOML: header, settings, then one entry per distinct model."""
    counts = collections.Counter(how for _, how, _ in repaired)
    lines = [
        "# The MIS paper's model zoo (Zimmermann et al., 2024, appendix F): its timm models by tagged name, and the",
        "# paper's other models that torchvision or timm provide; k = 200, MIS with DreamSim (N = 20, K = 9).",
        "# Written by scripts/paper_zoo.py from the paper's text with timm " + timm_version + ":",
        f"#   {n_listed} names listed, {len(repaired)} distinct timm models after repair ("
        + ", ".join(f"{counts[k]} {k}" for k in ("exact", "separators", "nearest")) + ");",
        f"#   {len(unrepaired)} names could not be repaired and are left out:",
        *[f"#     {name} ({why})" for name, why in unrepaired],
        "#   not provided by timm or torchvision: " + "; ".join(NOT_PROVIDED) + ".",
        "# Plan it (no weights, no data):  unitlens study plan studies/paper-000-zoo.toml",
        "# Run it (hub access, GPUs):      set data below, then  unitlens study run studies/paper-000-zoo.toml",
        'name = "paper-000-zoo"',
        '# the ImageNet-2012 training images (1,281,167 in class folders): set this to your copy',
        'data = "/path/to/imagenet/train"',
        'steps = ["record", "mis"]',
        "",
        "[record]",
        "k = 200",
        "",
        "[mis]",
        'backend = "dreamsim"',
        "n_tasks = 20",
        "k_expl = 9",
    ]
    for name, how, paper in repaired:
        lines += ["", "[[entry]]"]
        if how != "exact":
            lines.append(f"# paper: {', '.join(paper)} ({how})")
        lines.append(f'model = "timm:{name}"')
    for model, what in OTHER_MODELS:
        lines += ["", "[[entry]]", f"# {what}", f'model = "{model}"']
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", required=True, type=Path, help="the MIS paper as text (appendix F included)")
    parser.add_argument("--out", type=Path, default=Path("studies/paper-000-zoo.toml"))
    args = parser.parse_args()
    import timm

    names = paper_names(args.paper.read_text(encoding="utf-8"))
    known = timm.list_models(pretrained=True)
    folded: dict[str, list[str]] = collections.defaultdict(list)
    for k in known:
        folded[_fold(k)].append(k)
    by_model: dict[str, tuple[str, list[str]]] = {}
    unrepaired = []
    for name in names:
        fixed, how, why = repair(name, known, folded)
        if fixed is None:
            unrepaired.append((name, why))
            continue
        if how == "nearest":
            print(f"nearest: {name} -> {fixed} ({why})")
        _, seen = by_model.setdefault(fixed, (how, []))
        seen.append(name)
        if how == "exact":
            by_model[fixed] = (how, seen)
    repaired = [(model, how, paper) for model, (how, paper) in by_model.items()]
    args.out.write_text(study_file(repaired, unrepaired, timm.__version__, len(names)), encoding="utf-8")
    for name, why in unrepaired:
        print(f"unrepaired: {name} ({why})")
    print(f"{len(names)} names, {len(repaired)} distinct timm models, {len(unrepaired)} unrepaired -> {args.out}")


if __name__ == "__main__":
    main()
