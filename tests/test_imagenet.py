"""Finding validation images and their labels in each supported layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from regnet.imagenet import wnids
from regnet_convert.errors import InputError
from regnet_convert.validation.dataset import find_samples, subset


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")
    return path


def test_wnids_are_the_sorted_imagenet_classes():
    ids = wnids()
    assert len(ids) == 1000 and len(set(ids)) == 1000 and list(ids) == sorted(ids)
    assert ids[0] == "n01440764" and ids[-1] == "n15075141"


def test_class_folders_give_sorted_wnid_positions_and_ignore_non_images(tmp_path):
    touch(tmp_path / "n01443537" / "b.JPEG")
    touch(tmp_path / "n01440764" / "a.jpeg")
    touch(tmp_path / "n15075141" / "c.png")
    touch(tmp_path / "n15075141" / "notes.txt")
    touch(tmp_path / "n15075141" / ".hidden.JPEG")
    samples = find_samples(tmp_path)
    assert [(p.name, label) for p, label in samples] == [("a.jpeg", 0), ("b.JPEG", 1), ("c.png", 999)]


def test_mmcls_val_txt(tmp_path):
    touch(tmp_path / "ILSVRC2012_val_00000001.JPEG")
    touch(tmp_path / "ILSVRC2012_val_00000002.JPEG")
    labels = tmp_path / "val.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n")
    samples = find_samples(tmp_path, labels)
    assert [(p.name, label) for p, label in samples] == [
        ("ILSVRC2012_val_00000001.JPEG", 65),
        ("ILSVRC2012_val_00000002.JPEG", 970),
    ]


def test_kaggle_loc_val_solution_csv(tmp_path):
    data = tmp_path / "val"
    touch(data / "ILSVRC2012_val_00008726.JPEG")
    touch(data / "ILSVRC2012_val_00000001.JPEG")
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n"
        "ILSVRC2012_val_00000001,n01751748 1 2 3 4 \n"
    )
    samples = find_samples(data, labels)
    index = {wnid: i for i, wnid in enumerate(wnids())}
    assert [(p.name, label) for p, label in samples] == [
        ("ILSVRC2012_val_00000001.JPEG", index["n01751748"]),
        ("ILSVRC2012_val_00008726.JPEG", index["n02119789"]),
    ]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d / "missing", "no such data directory"),
        (lambda d: d, "has no class folders"),
        (lambda d: touch(d / "cats" / "x.jpg").parents[1], "not ImageNet-1k WordNet ids: cats"),
        (lambda d: (d / "n01440764").mkdir() or d, "holds no images"),
    ],
)
def test_bad_data_directories(tmp_path, setup, message):
    with pytest.raises(InputError, match=message):
        find_samples(setup(tmp_path))


def test_labels_naming_missing_images_or_images_without_labels(tmp_path):
    touch(tmp_path / "a.JPEG")
    labels = tmp_path / "val.txt"
    labels.write_text("a.JPEG 1\nb.JPEG 2\n")
    with pytest.raises(InputError, match=r"names 1 image\(s\) missing .*b.JPEG"):
        find_samples(tmp_path, labels)
    touch(tmp_path / "b.JPEG")
    touch(tmp_path / "c.JPEG")
    with pytest.raises(InputError, match=r"1 image\(s\) have no label in val.txt: c.JPEG"):
        find_samples(tmp_path, labels)
    labels.write_text("a.JPEG 1000\n")
    with pytest.raises(InputError, match="line 1 is not 'FILE CLASS_INDEX'"):
        find_samples(tmp_path, labels)


def test_subset_is_deterministic_and_spread():
    samples = [(Path(f"{i}.JPEG"), i // 50) for i in range(50_000)]
    chosen = subset(samples, 1000)
    assert chosen == subset(samples, 1000) and len(chosen) == 1000
    assert len({label for _, label in chosen}) == 1000  # one image from every class
    assert subset(samples, None) is samples
