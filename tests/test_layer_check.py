"""The check before the record pass, on a hand-built model with every kind of layer a hook cannot take as it is:
a module run three times per forward (recorded call by call as NAME@i, against brute force), a module whose weight
is used functionally (never runs), an image-independent output, and an output with a row too many; and NAME@i
everywhere a layer is named (hooks, stop_at, exemplar files)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unitlens.atlas.layout import exemplar_path
from unitlens.errors import BadInput
from unitlens.recording import record
from unitlens.recording.check import check_layers
from unitlens.runtime import ForwardHooks, capture_outputs, split_call, stop_at
from unitlens.zoo import enumerate_units
from unitlens.zoo.factory import LoadedModel

from conftest import to_int_tensor


class Shared(nn.Module):
    """stem -> shared conv 3 times (with a conv between the first two calls) -> head; ``unused`` is applied with
    F.linear (its module never runs); ``pos`` gives one row whatever the batch; ``odd`` one row too many."""

    def __init__(self, odd: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 1)
        self.pos = nn.Conv2d(2, 4, 1)
        self.unused = nn.Linear(4, 4)
        self.odd = nn.Linear(4, 4) if odd else None
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.stem(x)
        h = self.shared(h)
        h = self.shared(self.mid(h)) + self.pos(torch.ones(1, 2, *x.shape[-2:], device=x.device))
        h = self.shared(h).mean((2, 3))
        h = F.linear(h, self.unused.weight, self.unused.bias)
        if self.odd is not None:
            h = self.odd(torch.cat([h, h[:1]]))[: len(x)]
        return self.head(h)


def loaded(net: nn.Module) -> LoadedModel:
    return LoadedModel("shared", net.eval(), lambda img: to_int_tensor(img.resize((6, 6))) / 255, "hand-built",
                       (3, 6, 6))


def test_the_check_sorts_out_every_layer_at_once():
    model = loaded(Shared(odd=True))
    check = check_layers(model, enumerate_units(model.model, skip_first_last=False))
    assert check.never_run == ["unused"] and check.constant == ["pos"] and check.repeated == {"shared": 3}
    assert list(check.unrecordable) == ["odd"] and "3 rows for a batch of 2" in check.unrecordable["odd"]
    # the calls of the repeated module are layers in call order; depth counts the layers in forward order
    assert [i.name for i in check.layers] == ["stem", "shared@1", "mid", "shared@2", "shared@3", "head"]
    assert [i.depth for i in check.layers] == [-1, 0, 1, 2, 4, 6]  # pos (constant) is 3 of the forward, odd 5
    error = check.error()
    assert error is not None and "--exclude 'odd'" in str(error)


def test_split_calls_record_like_brute_force_and_the_rest_is_left_out(random_images, tmp_path):
    net = Shared()
    model = loaded(net)
    with pytest.warns(UserWarning, match=r"left out of the record: 1 never run in the forward: unused; "
                                         r"1 image-independent outputs \(constant units\): pos"):
        atlas = record(model, str(random_images), tmp_path / "a", k=3, batch_size=4, num_workers=0,
                       keep_first_last=True, progress=False).atlas
    names = [info.name for info in atlas.layers]
    assert names == ["stem", "shared@1", "mid", "shared@2", "shared@3", "head"]
    calls: list[torch.Tensor] = []
    handle = net.shared.register_forward_hook(lambda m, i, o: calls.append(o.mean((2, 3))))
    data = atlas.dataset(model.transform)
    with torch.no_grad():
        for s in range(len(data)):
            net(data[s][0][None])
    handle.remove()
    per_call = torch.stack(calls).reshape(len(data), 3, 4)  # (images, call, channel)
    units = atlas.units()
    for i in range(3):
        rows = units[units["layer"] == f"shared@{i + 1}"].sort_values("unit")
        np.testing.assert_allclose(rows["mean"], per_call[:, i].double().mean(0), atol=1e-5)
        ex = atlas.exemplars(f"shared@{i + 1}")
        np.testing.assert_allclose(ex.top_vals[:, :3], per_call[:, i].T.sort(1, descending=True).values[:, :3],
                                   atol=1e-5)
    assert exemplar_path(atlas.path, "shared@2").name == "shared@2.safetensors"


def test_named_layers_and_the_choices_of_the_check(random_images, tmp_path):
    model = loaded(Shared(odd=True))
    kw = dict(k=2, batch_size=4, num_workers=0, progress=False)
    with pytest.raises(BadInput, match=r"1 layer\(s\) cannot be recorded \(odd: .*--exclude 'odd'"):
        record(model, str(random_images), tmp_path / "a", **kw)
    assert not (tmp_path / "a").exists()  # refused before anything was written or read
    with pytest.raises(BadInput, match="unused never run in the model's forward"):
        record(model, str(random_images), tmp_path / "b", ["stem", "unused"], **kw)
    with pytest.raises(BadInput, match=r"shared@4 \(module shared runs 3 time\(s\) per forward\) do not exist"):
        record(model, str(random_images), tmp_path / "c", ["shared@4"], **kw)
    picked = record(model, str(random_images), tmp_path / "d", ["shared@2", "mid"], **kw).atlas
    assert [i.name for i in picked.layers] == ["mid", "shared@2"]
    with pytest.warns(UserWarning, match=r"run several times per forward \(repeated='skip'\): shared"):
        skipped = record(model, str(random_images), tmp_path / "e", exclude=["odd"], repeated="skip", **kw).atlas
    assert not any(split_call(i.name)[0] == "shared" for i in skipped.layers)


def test_hooks_stop_and_capture_take_one_call_of_a_module():
    net = Shared().eval()
    x = torch.rand(2, 3, 6, 6)
    calls: list[torch.Tensor] = []
    handle = net.shared.register_forward_hook(lambda m, i, o: calls.append(o.clone()))
    with torch.no_grad():
        net(x)
    handle.remove()
    seen: dict[str, list] = {}
    with ForwardHooks(net, ["shared@2", "shared"], lambda name, out: seen.setdefault(name, []).append(out)), \
            torch.no_grad():
        net(x)
        net(x)  # every forward counts its calls from 1
    assert len(seen["shared"]) == 6 and len(seen["shared@2"]) == 2
    torch.testing.assert_close(seen["shared@2"][1], calls[1])
    with torch.no_grad():
        torch.testing.assert_close(capture_outputs(net, x, ["shared@3"])["shared@3"], calls[2])
        with stop_at(net, "shared@2") as stopped:
            torch.testing.assert_close(stopped(x), calls[1])
