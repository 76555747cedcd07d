"""The GPU suite (benchmarks/gpu_suite.py) runs end to end on the CPU with tiny sizes, so that it cannot rot."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unitlens.zoo.factory import load_model

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def _suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _units(model: nn.Module) -> int:
    """Units of every Conv / Linear / BatchNorm / LayerNorm / GroupNorm module, counted from the modules."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            total += m.out_channels
        elif isinstance(m, nn.Linear):
            total += m.out_features
        elif isinstance(m, nn.BatchNorm2d):
            total += m.num_features
        elif isinstance(m, nn.LayerNorm):
            total += m.normalized_shape[0]
        elif isinstance(m, nn.GroupNorm):
            total += m.num_channels
    return total


def test_suite_runs_on_the_cpu_and_prints_one_table(capsys):
    threads = torch.get_num_threads()
    try:
        table = _suite().run(["--device", "cpu", "--small"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "unitlens GPU suite on cpu" in out and "record/bare" in out and "polysemanticity" in out
    record = table[table["item"].str.endswith("record pass")]
    assert sorted(zip(record["item"], record["dtype"])) == [
        ("test ResNet record pass", "bf16"), ("test ResNet record pass", "fp32"),
        ("test ViT record pass", "bf16"), ("test ViT record pass", "fp32")]
    # every analysable layer is recorded: the atlas's units are those of the model's modules
    for spec, label in (("timm:test_resnet", "test ResNet"), ("timm:test_vit", "test ViT")):
        expected = _units(load_model(spec, pretrained=False).model)
        assert set(record.loc[record["item"].str.startswith(label), "units"]) == {expected}
    rates = table[["bare img/s", "unitlens", "loader img/s", "end to end img/s"]].to_numpy(dtype=float)
    assert np.all(np.isnan(rates) | (rates > 0)) and np.all(record["ratio"] > 0)
    mis = table[table["item"].str.startswith("MIS scorer")]
    assert len(mis) == 2 and (mis["error"] < 1e-5).all() and (mis["unitlens"] > 0).all()
    dists = table[table["item"].str.startswith("DISTS similarity matrix")]
    assert list(dists["units"]) == [64] and (dists["unitlens"] > 0).all() and list(dists["rate"]) == ["pairs/s"]
    featviz = table[table["item"].str.startswith("feature visualisation")]
    assert len(featviz) == 1 and featviz["units"].iloc[0] == 2 and featviz["unitlens"].iloc[0] > 0
    assert table["peak GiB"].isna().all()  # no GPU memory on the CPU
