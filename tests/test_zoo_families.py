"""One architecture of each family of the MIS paper's model zoo, random init: recorded on a few tiny images, the
atlas verifies, and its layers and units are the ones ``unitlens study plan`` (models built without weights, on
the meta device) counts for it. Among them the families whose layers a hook cannot take as they are: XCiT (an
image-independent output), CoaT (modules run several times per forward), EVA02 (a module that never runs) and
lambda networks (a 5-D weight, no channels-last).

Each family runs its smallest variant at the smallest input it accepts (``?input_size=``; fixed-size transformers
at their own size), on 2 images with k = 2.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from unitlens.atlas.verify import verify_atlas
from unitlens.recording import record
from unitlens.runtime import channels_last_ok, torch_threads
from unitlens.study.plan import plan_study
from unitlens.zoo import load_model

from conftest import write_images

# family -> timm name (the smallest variant); "?input_size=N" where the family takes inputs smaller than its own
FAMILIES = {
    "resnet": "resnet18.a1_in1k?input_size=32",
    "resnext": "resnext26ts.ra2_in1k?input_size=32",
    "senet": "seresnext26d_32x4d.bt_in1k?input_size=32",
    "resnest": "resnest14d.gluon_in1k?input_size=32",
    "skresnet": "skresnet18.ra_in1k?input_size=32",
    "regnet": "regnetx_002.pycls_in1k?input_size=32",
    "regnetz": "regnetz_b16.ra3_in1k?input_size=32",
    "nfnet": "nf_regnet_b1.ra2_in1k?input_size=32",
    "efficientnet": "efficientnet_b0.ra_in1k?input_size=32",
    "efficientnetv2": "tf_efficientnetv2_b0.in1k?input_size=32",
    "tinynet": "tinynet_e.in1k?input_size=32",
    "mobilenetv2": "mobilenetv2_050.lamb_in1k?input_size=32",
    "mobilenetv3": "mobilenetv3_small_050.lamb_in1k?input_size=32",
    "mnasnet": "mnasnet_small.lamb_in1k?input_size=32",
    "hardcorenas": "hardcorenas_a.miil_green_in1k?input_size=32",
    "fbnet": "fbnetv3_b.ra2_in1k?input_size=32",
    "mixnet": "mixnet_s.ft_in1k?input_size=32",
    "lcnet": "lcnet_050.ra2_in1k?input_size=32",
    "ghostnet": "ghostnet_100.in1k?input_size=32",
    "repghostnet": "repghostnet_050.in1k?input_size=32",
    "rexnet": "rexnet_100.nav_in1k?input_size=32",
    "densenet": "densenet121.ra_in1k?input_size=32",
    "dla": "dla46_c.in1k?input_size=32",
    "dpn": "dpn68b.mx_in1k?input_size=32",
    "selecsls": "selecsls42b.in1k?input_size=32",
    "vovnet": "ese_vovnet19b_dw.ra_in1k?input_size=32",
    "gernet": "gernet_s.idstcv_in1k?input_size=32",
    "repvgg": "repvgg_a0.rvgg_in1k?input_size=32",
    "hrnet": "hrnet_w18_small.ms_in1k?input_size=64",
    "convnext": "convnext_atto.d2_in1k?input_size=32",
    "convnextv2": "convnextv2_atto.fcmae_ft_in1k?input_size=32",
    "metaformer": "caformer_s18.sail_in1k?input_size=64",
    "poolformer": "poolformer_s12.sail_in1k?input_size=32",
    "edgenext": "edgenext_xx_small.in1k?input_size=64",
    "fastvit": "fastvit_t8.apple_in1k?input_size=64",
    "repvit": "repvit_m1.dist_in1k?input_size=32",
    "efficientvit": "efficientvit_b0.r224_in1k?input_size=64",
    "pvt_v2": "pvt_v2_b0.in1k?input_size=64",
    "mobilevit": "mobilevitv2_050.cvnets_in1k?input_size=64",
    "lambda": "lambda_resnet26t.c1_in1k?input_size=64",
    "xcit": "xcit_nano_12_p16_224.fb_in1k?input_size=64",
    "vit": "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "eva02": "eva02_tiny_patch14_224.mim_in22k",
    "coat": "coat_lite_tiny.in1k",
    "pit": "pit_ti_224.in1k",
    "levit": "levit_conv_128s.fb_dist_in1k",
    "efficientformer": "efficientformerv2_s0.snap_dist_in1k",
}
IMAGES = 2
# what each of the families a hook cannot take as it is records (layer names of its atlas)
SPECIAL = {
    "xcit": lambda names: "pos_embed.token_projection" not in names,  # one row per batch: left out
    "coat": lambda names: {"cpe1.proj@1", "cpe1.proj@2"} <= names and "cpe1.proj" not in names,  # one per call
    "eva02": lambda names: not any(n.endswith("attn.qkv") for n in names),  # applied with F.linear: never runs
    "lambda": lambda names: "stages.2.1.self_attn.conv_lambda" in names,  # a Conv3d, whose 5-D weight ...
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny images: one torch thread does it, and runs steadily on busy shared cores."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The images, and the plan of every family's model (random init) as a study file plans it."""
    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(0)
    write_images(root / "images", [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(IMAGES)])
    entries = "".join(f'\n[[entry]]\nname = "{family}"\nmodel = "timm:{name}"\nrandom = true\n'
                      for family, name in FAMILIES.items())
    study = root / "zoo.toml"
    study.write_text(f'name = "zoo"\ndata = "{root / "images"}"\n[record]\nk = 2\n{entries}')
    plan = plan_study(study, progress=False)
    return root, plan.table.set_index("entry")


def test_the_zoo_spans_the_papers_families():
    assert len(FAMILIES) >= 40 and {"xcit", "coat", "eva02", "lambda"} <= set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_records_what_the_plan_counts(family, zoo):
    root, plan = zoo
    row = plan.loc[family]
    assert row["problem"] == "", row["problem"]
    loaded = load_model(f"timm:{FAMILIES[family]}", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # left-out layers are listed in a warning; the plan lists them too
        result = record(loaded, str(root / "images"), root / family, k=2, batch_size=IMAGES, num_workers=0,
                        progress=False)
    manifest = result.atlas.manifest
    assert verify_atlas(result.atlas.path).ok
    assert manifest.config.model == f"timm:{FAMILIES[family]}"  # the tagged name, as given
    assert (len(manifest.layers), manifest.n_units) == (row["layers"], row["units"])
    assert row["input_size"] == "x".join(str(s) for s in loaded.input_size)
    names = {info.name for info in result.atlas.layers}
    assert SPECIAL.get(family, lambda _: True)(names), family
    if family == "lambda":  # ... keeps it from channels-last, which the pass then leaves off
        assert not channels_last_ok(loaded.model)
    if family in ("resnet", "coat"):  # every step that reloads the atlas's model gets the same one
        assert result.atlas.load_model().weights_hash() == loaded.weights_hash()
