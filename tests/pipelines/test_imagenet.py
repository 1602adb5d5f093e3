"""ILSVRC-2012's class list and validation labels from the installed tensorflow-datasets
(`pipelines.imagenet`), and `pipelines.convert --imagenet`, which needs no labels file."""

import json
import os
import shutil

import pytest
import tensorflow as tf

from pipelines import imagenet, schema
from tests.commands import run_command

PHOTOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "photos")


def test_the_class_list_is_ilsvrc2012s_in_sorted_wnid_order():
    wnids, names = imagenet.wnids(), imagenet.class_names()
    assert len(wnids) == len(names) == 1000 and list(wnids) == sorted(wnids) and len(set(names)) == 1000
    assert (wnids[0], names[0]) == ("n01440764", "tench, Tinca tinca")
    assert (wnids[999], names[999].split(",")[0]) == ("n15075141", "toilet tissue")
    # The two cranes and the two maillots are told apart, each beside its own wnid.
    assert (wnids[134], names[134]) == ("n02012849", "crane (bird)")
    assert (wnids[517], names[517]) == ("n03126707", "crane (machine)")
    assert (names[638], names[639]) == ("maillot", "maillot, tank suit")


def test_validation_labels_are_the_50000_in_file_name_order():
    labels = imagenet.validation_wnids()
    assert len(labels) == 50_000 and set(labels) <= set(imagenet.wnids())
    # ILSVRC2012_val_00000001.JPEG is a snake (n01751748), per the devkit's ground truth.
    assert imagenet.validation_file_name(0) == "ILSVRC2012_val_00000001.JPEG" and labels[0] == "n01751748"


def test_convert_imagenet_validation_needs_no_labels_file(tmp_path):
    flat = tmp_path / "val"
    flat.mkdir()
    for index, photo in zip((0, 1, 2), sorted(os.listdir(PHOTOS))):
        shutil.copy(os.path.join(PHOTOS, photo), flat / imagenet.validation_file_name(index))
    out = tmp_path / "data"
    run_command("pipelines.convert", "--imagenet", f"--input_dir={flat}", f"--output_dir={out}",
                "--split=validation", "--workers=1", "--num_shards=1", "--noprogress")
    info = json.loads((out / schema.DATASET_INFO_FILE).read_text())
    assert info["classes"] == list(imagenet.wnids()) and info["class_names"][134] == "crane (bird)"
    stored = {}
    for record in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(str(out / "validation-*")))):
        features = tf.io.parse_single_example(record, schema.feature_spec())
        stored[features[schema.IMAGE_FILENAME].numpy().decode()] = (
            int(features[schema.CLASS_LABEL]), features[schema.CLASS_SYNSET].numpy().decode())
    labels = imagenet.validation_wnids()
    assert stored == {imagenet.validation_file_name(i): (imagenet.wnids().index(labels[i]), labels[i])
                      for i in range(3)}


def test_convert_imagenet_names_a_file_that_is_not_ilsvrc2012(tmp_path):
    from pipelines import conversion

    flat = tmp_path / "val"
    flat.mkdir()
    shutil.copy(os.path.join(PHOTOS, "rocket.jpg"), flat / "rocket.jpg")
    with pytest.raises(conversion.ConversionError, match=r"expects ILSVRC-2012 validation files.*Received: rocket\.jpg"):
        conversion.convert_split(conversion.ConvertConfig(input_dir=str(flat), output_dir=str(tmp_path / "out"),
                                                          split="validation", imagenet=True, workers=1,
                                                          progress=False))
