"""Shared test set-up: quiet TensorFlow, GPUs hidden unless `-m gpu` asks for them, and
two logical CPUs for the distribution tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402  (after the environment above)


def _selects_gpu_tests(config):
    expression = config.getoption("markexpr") or ""
    return "gpu" in expression and "not gpu" not in expression


def pytest_configure(config):
    # Before any test touches TensorFlow's devices. The default run is the same with or
    # without a GPU: GPUs are hidden here and from the commands the tests start (a visible
    # GPU would pick other kernels and make `mirrored` mean the GPU, not two CPUs).
    # `pytest -m gpu` keeps them: tests/gpu compares them with the CPU.
    if not _selects_gpu_tests(config):
        tf.config.set_visible_devices([], "GPU")
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    # Two logical CPU devices, so the tests can run MirroredStrategy over two replicas on
    # this machine, as TensorFlow's own do.
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


def pytest_collection_modifyitems(config, items):
    # The long end-to-end runs first (a stable sort keeps the rest in order): with two test
    # processes (README: pytest -q -n 2) each starts on one of them while the other works
    # through the short ones, instead of one process finishing alone on the last of them.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Converted shards of 5 generated classes: 35 training and 15 validation images, stored
    with shorter side 73 (= 64 / 0.875, so 64-px crops need no resize)."""
    from pipelines import conversion, synthetic

    root = tmp_path_factory.mktemp("tiny_dataset")
    synthetic.write_image_folder(root / "train", num_classes=5, images_per_class=7,
                                 min_size=60, max_size=120, seed=0)
    synthetic.write_image_folder(root / "val", num_classes=5, images_per_class=3, min_size=60,
                                 max_size=120, seed=1, flat_with_labels=str(root / "val_labels.txt"))
    for split, extra in (("train", {}), ("validation", {"labels_file": str(root / "val_labels.txt")})):
        conversion.convert_split(conversion.ConvertConfig(
            input_dir=str(root / ("train" if split == "train" else "val")), output_dir=str(root / "shards"),
            split=split, resize_shorter=73, num_shards=3 if split == "train" else 1, workers=1,
            progress=False, **extra))
    return str(root / "shards")


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory):
    """A finished tiny training run on `tiny_dataset`, exported as the train command does."""
    from alexnet_tf import training
    from alexnet_tf.serving import saved_model

    model_dir = str(tmp_path_factory.mktemp("trained_run") / "run")
    training.train(training.TrainConfig(
        model_dir=model_dir, data_dir=tiny_dataset, image_size=64, conv_filters=(8, 8, 16, 16, 8),
        fc_units=32, init="he", learning_rate=0.001, batch_size=5, epochs=2, steps_per_epoch=3))
    saved_model.export_run(saved_model.ExportConfig(model_dir=model_dir))
    return model_dir


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A tiny bvlc_alexnet-layout .npy (tests/weights/caffe_reference.py)."""
    from tests.weights.caffe_reference import write_caffe_file

    path = tmp_path_factory.mktemp("weights") / "bvlc_alexnet.npy"
    write_caffe_file(path)
    return str(path)


@pytest.fixture(scope="session")
def imported_run(weights_file, tmp_path_factory):
    """`weights_file` imported into a run directory, with class names."""
    from alexnet_tf.weights import importing
    from tests.weights.caffe_reference import TINY_CLASSES

    names = tmp_path_factory.mktemp("names") / "synset_words.txt"
    names.write_text("".join(f"n{i:08d} class number {i}\n" for i in range(TINY_CLASSES)))
    model_dir = str(tmp_path_factory.mktemp("imported") / "bvlc")
    importing.import_weights(weights_file, model_dir, class_names_file=str(names))
    return model_dir


@pytest.fixture(scope="session")
def folder_227(tmp_path_factory):
    """Shards of 3 generated classes stored with shorter side 260 (227-px crops need no resize)."""
    from pipelines import conversion, synthetic

    root = tmp_path_factory.mktemp("folder_227")
    synthetic.write_image_folder(root / "train", num_classes=3, images_per_class=6, min_size=260,
                                 max_size=300, seed=0)
    synthetic.write_image_folder(root / "val", num_classes=3, images_per_class=2, min_size=260,
                                 max_size=300, seed=1, flat_with_labels=str(root / "labels.txt"))
    for split, folder, extra in (("train", "train", {}), ("validation", "val", {"labels_file": str(root / "labels.txt")})):
        conversion.convert_split(conversion.ConvertConfig(
            input_dir=str(root / folder), output_dir=str(root / "shards"), split=split, resize_shorter=260,
            num_shards=1, workers=1, progress=False, **extra))
    return str(root / "shards")
