"""record_many: one pass over the data for several models gives the atlases of separate record runs, resumes
like record, and shares one preprocessing between models whose transforms are equal."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from unitlens.atlas import Atlas
from unitlens.errors import BadInput
from unitlens.recording import record, record_many
from unitlens.recording.passes import AllTransforms, transform_key
from unitlens.zoo import enumerate_units, load_model
from unitlens.zoo.factory import LoadedModel

from conftest import ExactNet, to_int_tensor
from test_record import Interrupt, assert_same_atlas


def halved(img):
    """Another preprocessing than to_int_tensor: every activation of ExactNet halves."""
    return to_int_tensor(img) / 2


def exact(name: str, scale: float = 1.0, transform=to_int_tensor) -> LoadedModel:
    net = ExactNet().eval()
    with torch.no_grad():
        net.conv.weight.mul_(scale)
    return LoadedModel(name=name, model=net, transform=transform, weights=f"hand-built x{scale}", input_size=(3, 8, 8))


def models() -> list[LoadedModel]:
    """Two hand-built nets sharing a transform, one with its own, and a timm architecture with its own pipeline."""
    return [exact("a"), exact("b", scale=-3.0), exact("c", transform=halved),
            load_model("timm:resnet10t?num_classes=3&input_size=32", pretrained=False)]


def assert_identical(a: Atlas, b: Atlas) -> None:
    """Exemplars, units, samples and manifest (but the run's time and settings) are the same."""
    assert_same_atlas(a, b)
    pd.testing.assert_frame_equal(a.samples(), b.samples(), check_exact=True)
    strip = {"seconds", "options"}  # options: how each run ran (checkpoint_every differs here by design)
    assert {k: v for k, v in a.manifest.as_dict().items() if k not in strip} == \
        {k: v for k, v in b.manifest.as_dict().items() if k not in strip}


def separate(all_models, images, root, k=9):
    return [record(m, str(images), root / f"sep{i}", k=k, batch_size=7, progress=False, num_workers=0).atlas
            for i, m in enumerate(all_models)]


def test_record_many_equals_separate_records(random_images, tmp_path):
    ms = models()
    refs = separate(ms, random_images, tmp_path)
    # same batch size: a real model's float forward may round differently in other batch shapes
    results = record_many(ms, str(random_images), [tmp_path / f"many{i}" for i in range(len(ms))], k=9,
                          batch_size=7, checkpoint_every=10, progress=False, num_workers=0)
    assert [r.n_images for r in results] == [60] * 4
    for ref, res in zip(refs, results):
        assert_identical(ref, res.atlas)
    # the first two share a preprocessing: three distinct transforms for four models
    assert len({transform_key(m.transform) for m in ms}) == 3


def test_transform_keys_compare_pipelines_not_objects():
    a = load_model("timm:resnet10t?input_size=32", pretrained=False).transform
    b = load_model("timm:resnet10t?input_size=32", pretrained=False).transform
    c = load_model("timm:resnet10t?input_size=40", pretrained=False).transform
    assert a is not b and transform_key(a) == transform_key(b)
    assert transform_key(a) != transform_key(c)
    assert transform_key(to_int_tensor) == transform_key(to_int_tensor) != transform_key(halved)
    f, g = (lambda x: x), (lambda x: x)
    assert transform_key(f) != transform_key(g)  # other callables are merged only when they are the same object


def test_interrupted_record_many_resumes_each_atlas(random_images, tmp_path):
    ms = models()[:3]
    refs = separate(ms, random_images, tmp_path)
    outs = [tmp_path / f"many{i}" for i in range(3)]
    interrupt = Interrupt(at=37)  # model b's preprocessing fails once, at the 38th image
    flaky = [ms[0], copy.copy(ms[1]), ms[2]]
    flaky[1].transform = interrupt
    with pytest.raises(KeyboardInterrupt):
        record_many(flaky, str(random_images), outs, k=9, batch_size=4, checkpoint_every=8, progress=False,
                    num_workers=0)
    assert not any(Atlas(o).complete for o in outs)
    again = record_many(ms, str(random_images), outs, k=9, batch_size=6, progress=False, num_workers=0)
    assert [r.resumed_from for r in again] == [36, 36, 36]
    for ref, res in zip(refs, again):
        assert_identical(ref, res.atlas)


def test_atlases_at_different_stages_are_finished_in_one_pass(random_images, tmp_path):
    ms = models()[:3]
    refs = separate(ms, random_images, tmp_path)
    outs = [tmp_path / f"mixed{i}" for i in range(3)]
    record(ms[0], str(random_images), outs[0], k=9, progress=False, num_workers=0)  # complete
    flaky = copy.copy(ms[1])
    flaky.transform = Interrupt(at=25)
    with pytest.raises(KeyboardInterrupt):  # stopped at image 24
        record(flaky, str(random_images), outs[1], k=9, batch_size=4, checkpoint_every=8, progress=False,
               num_workers=0)
    results = record_many(ms, str(random_images), outs, k=9, batch_size=7, progress=False, num_workers=0)
    assert results[0].already_complete and results[1].resumed_from == 24 and results[2].resumed_from == 0
    for ref, res in zip(refs, results):
        assert_identical(ref, res.atlas)


def test_bad_calls_fail_before_any_work(random_images, tmp_path):
    ms = models()[:2]
    with pytest.raises(BadInput, match="same atlas folder"):
        record_many(ms, str(random_images), [tmp_path / "x", tmp_path / "x"], progress=False)
    with pytest.raises(BadInput, match="one out folder"):
        record_many(ms, str(random_images), [tmp_path / "x"], progress=False)
    with pytest.raises(BadInput, match="layer list"):
        record_many(ms, str(random_images), [tmp_path / "x", tmp_path / "y"], layers=[None], progress=False)
    assert not (tmp_path / "x").exists()


def test_layers_per_model_and_worker_processes(random_images, tmp_path):
    """Each model records its own layers; with loader worker processes the result is the same."""
    ms = models()[:2]
    chosen = [enumerate_units(ms[0].model, include=["conv"]), None]
    results = record_many(ms, str(random_images), [tmp_path / "w0", tmp_path / "w1"], layers=chosen, k=9,
                          progress=False, num_workers=2)
    assert [i.name for i in results[0].atlas.layers] == ["conv"]
    ref0 = record(ms[0], str(random_images), tmp_path / "r0", chosen[0], k=9, progress=False, num_workers=0)
    ref1 = record(ms[1], str(random_images), tmp_path / "r1", k=9, progress=False, num_workers=0)
    assert_identical(ref0.atlas, results[0].atlas)
    assert_identical(ref1.atlas, results[1].atlas)
    assert AllTransforms([to_int_tensor, halved])(ref0.atlas.dataset().image(0))[1].max() <= 255 / 2
