"""Datasets: stable ids, labels, file lists, the bundled demo set, fingerprints."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unitlens.data import DEMO_ROOT, load_dataset

from conftest import write_images


def test_folder_ids_follow_sorted_paths_and_classes_are_top_folders(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(4)]
    write_images(tmp_path / "d", arrays, ["zebra", "apple", "zebra", "apple"])
    (tmp_path / "d" / "apple" / "sub").mkdir()
    (tmp_path / "d" / "apple" / "img_0001.png").rename(tmp_path / "d" / "apple" / "sub" / "x.png")
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path / "d")
    rel = [p.split("/d/", 1)[1] for p in data.samples["path"]]
    assert rel == ["apple/img_0003.png", "apple/sub/x.png", "zebra/img_0000.png", "zebra/img_0002.png"]
    assert data.samples["id"].tolist() == [0, 1, 2, 3]
    assert data.samples["label"].tolist() == ["apple", "apple", "zebra", "zebra"]
    assert np.array_equal(np.asarray(data.image(2)), arrays[0])
    before = data.fingerprint()
    assert load_dataset(tmp_path / "d").fingerprint() == before
    changed = (tmp_path / "d" / "apple" / "sub" / "x.png").read_bytes() + b"0"
    (tmp_path / "d" / "zebra" / "img_0002.png").write_bytes(changed)
    assert load_dataset(tmp_path / "d").fingerprint() != before


def test_file_lists_keep_their_order_and_metadata(tmp_path):
    rng = np.random.default_rng(2)
    paths = write_images(tmp_path / "imgs", [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)])
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\nimgs/all/{paths[2].name}\n{paths[0]}\n")
    data = load_dataset(listing)
    assert [p.rsplit("/", 1)[1] for p in data.samples["path"]] == [paths[2].name, paths[0].name]
    table = tmp_path / "list.csv"
    pd.DataFrame({"path": [str(paths[1]), str(paths[0])], "label": ["b", "a"], "caption": ["x", "y"]}).to_csv(table)
    data = load_dataset(table)
    assert data.samples["label"].tolist() == ["b", "a"] and data.samples["caption"].tolist() == ["x", "y"]
    (tmp_path / "bad.csv").write_text("file\nx.png\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        load_dataset(tmp_path / "bad.csv")
    (tmp_path / "missing.txt").write_text("nowhere.png\n")
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        load_dataset(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="neither a folder"):
        load_dataset(paths[0])


def test_demo_set_is_bundled_with_all_categories_and_metadata():
    data = load_dataset("demo")
    assert 900 <= len(data) <= 1100
    assert data.samples["category"].nunique() == 22
    assert {"category", "subcategory", "name_words", "source"} <= set(data.samples.columns)
    size = sum(p.stat().st_size for p in DEMO_ROOT.rglob("*") if p.is_file())
    assert size <= 10 * 2**20
    img = data.image(0)
    assert img.mode == "RGB" and img.size[0] == img.size[1]
    lighthouse = data.samples[data.samples["path"].str.contains("lighthouse_matthew")]
    assert "lighthouse" in lighthouse["name_words"].iloc[0]
