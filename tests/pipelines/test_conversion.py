import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import conversion, schema, synthetic, verification

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _jpeg_bytes(image, **save_kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **save_kwargs)
    return buffer.getvalue()


def _pattern(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def awkward_folder(tmp_path):
    """Two classes of ImageNet's awkward cases, plus three undecodable files."""
    root = tmp_path / "train"
    good_a, good_b = root / "n01440764", root / "n02105855"
    good_a.mkdir(parents=True)
    good_b.mkdir(parents=True)
    rgb = Image.fromarray(_pattern(60, 90))
    (good_a / "rgb.JPEG").write_bytes(_jpeg_bytes(rgb))
    (good_a / "cmyk.JPEG").write_bytes(_jpeg_bytes(rgb.convert("CMYK")))
    (good_a / "gray.JPEG").write_bytes(_jpeg_bytes(rgb.convert("L")))
    (good_a / "progressive.JPEG").write_bytes(_jpeg_bytes(rgb, progressive=True))
    png = io.BytesIO()
    Image.fromarray(_pattern(100, 70, 1)).save(png, format="PNG")
    # As ImageNet's n02105855_2933.JPEG: PNG content behind a .JPEG name.
    (good_b / "n02105855_2933.JPEG").write_bytes(png.getvalue())
    rgba = io.BytesIO()
    Image.fromarray(np.dstack([_pattern(50, 80, 2), np.full((50, 80, 1), 128, np.uint8)])).save(rgba, format="PNG")
    (good_b / "rgba.png").write_bytes(rgba.getvalue())
    (good_b / "tall.JPEG").write_bytes(_jpeg_bytes(Image.fromarray(_pattern(300, 40, 3))))
    # Undecodable: truncated, empty, not an image.
    (good_b / "truncated.JPEG").write_bytes(_jpeg_bytes(rgb)[:300])
    (good_b / "empty.JPEG").write_bytes(b"")
    (good_b / "notes.JPEG").write_bytes(b"this is not an image\n")
    return root


def _read_split(output_dir, split):
    paths = sorted(glob.glob(schema.split_file_pattern(str(output_dir), split)))
    spec = schema.feature_spec()
    records = []
    for serialized in tf.data.TFRecordDataset(paths):
        features = tf.io.parse_single_example(serialized, spec)
        records.append({key: value.numpy() for key, value in features.items()})
    return records


def _convert(input_dir, output_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("progress", False)
    return conversion.convert_split(
        conversion.ConvertConfig(input_dir=str(input_dir), output_dir=str(output_dir), **kwargs))


def _run_cli(*args, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "pipelines.convert", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def _shard_bytes(output_dir):
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(output_dir, "*-of-*")))}


def test_awkward_files_become_rgb_jpegs_and_bad_ones_are_reported(awkward_folder, tmp_path):
    names = tmp_path / "LOC_synset_mapping.txt"
    names.write_text("n01440764 tench, Tinca tinca\nn02105855 Shetland sheepdog, Shetland sheep dog\n")
    out = tmp_path / "out"
    summary = _convert(awkward_folder, out, resize_shorter=64, class_names_file=str(names),
                       max_bad_fraction=0.5)
    assert summary.num_examples == 7
    assert {item["file"] for item in summary.skipped} == {
        "n02105855/truncated.JPEG", "n02105855/empty.JPEG", "n02105855/notes.JPEG"}
    reasons = {item["file"]: item["reason"] for item in summary.skipped}
    assert reasons["n02105855/empty.JPEG"] == "empty file"
    assert "not a decodable image" in reasons["n02105855/notes.JPEG"]

    records = _read_split(out, "train")
    assert len(records) == 7
    by_name = {r[schema.IMAGE_FILENAME].decode(): r for r in records}
    assert set(by_name) == {"rgb.JPEG", "cmyk.JPEG", "gray.JPEG", "progressive.JPEG",
                            "n02105855_2933.JPEG", "rgba.png", "tall.JPEG"}
    for name, record in by_name.items():
        encoded = record[schema.IMAGE_ENCODED]
        assert encoded[:2] == b"\xff\xd8", name  # JPEG bytes, whatever the input was
        assert record[schema.IMAGE_FORMAT] == b"JPEG"
        image = tf.io.decode_jpeg(encoded).numpy()
        assert image.shape[2] == 3 and record[schema.IMAGE_CHANNELS] == 3, name
        assert (record[schema.IMAGE_HEIGHT], record[schema.IMAGE_WIDTH]) == image.shape[:2]
        assert min(image.shape[:2]) == 64, name  # shorter side exactly --resize_shorter
        # The pipeline's fused decode reads every stored image.
        crop = tf.io.decode_and_crop_jpeg(encoded, [0, 0, 32, 32], channels=3)
        assert crop.shape == (32, 32, 3)
        synset = record[schema.CLASS_SYNSET].decode()
        assert record[schema.CLASS_LABEL] == ["n01440764", "n02105855"].index(synset)
        assert record[schema.CLASS_TEXT].decode().startswith(
            "tench" if synset == "n01440764" else "Shetland sheepdog")
    # Aspect ratio kept: 300x40 -> 480x64; 60x90 -> 64x96.
    assert (by_name["tall.JPEG"][schema.IMAGE_HEIGHT], by_name["tall.JPEG"][schema.IMAGE_WIDTH]) == (480, 64)
    assert (by_name["rgb.JPEG"][schema.IMAGE_HEIGHT], by_name["rgb.JPEG"][schema.IMAGE_WIDTH]) == (64, 96)
    # Grayscale became three equal channels; CMYK kept the colours of the original.
    gray = tf.io.decode_jpeg(by_name["gray.JPEG"][schema.IMAGE_ENCODED]).numpy().astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 3
    original = tf.io.decode_jpeg(by_name["rgb.JPEG"][schema.IMAGE_ENCODED]).numpy().astype(float)
    cmyk = tf.io.decode_jpeg(by_name["cmyk.JPEG"][schema.IMAGE_ENCODED]).numpy().astype(float)
    assert np.abs(original - cmyk).mean() < 20

    info = json.loads((out / "dataset_info.json").read_text())
    assert info["classes"] == ["n01440764", "n02105855"]
    assert info["class_names"][0] == "tench, Tinca tinca"
    assert info["label_offset"] == 0
    assert info["splits"]["train"]["num_examples"] == 7
    assert {s["file"] for s in info["splits"]["train"]["skipped"]} == set(reasons)


def test_too_many_bad_files_fail_the_cli_but_keep_the_good_ones(awkward_folder, tmp_path):
    result = _run_cli(f"--input_dir={awkward_folder}", f"--output_dir={tmp_path / 'out'}",
                      "--resize_shorter=64", "--workers=1", "--max_bad_fraction=0.1", check=False)
    assert result.returncode == 1
    assert "skipped n02105855/empty.JPEG: empty file" in result.stdout
    assert "--max_bad_fraction=0.1" in result.stderr
    assert len(_read_split(tmp_path / "out", "train")) == 7


def test_statistics_in_dataset_info(tmp_path):
    # Two flat colours in equal parts: the mean and the one principal direction are known.
    root = tmp_path / "train"
    for synset, colour in (("a", (200, 40, 40)), ("b", (40, 40, 200))):
        (root / synset).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 32), colour).save(root / synset / f"{i}.png")
    _convert(root, tmp_path / "out", resize_shorter=0)
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    np.testing.assert_allclose(info["rgb_mean"], [120, 40, 120], atol=1.0)
    eigvec = np.array(info["rgb_eigvec"])
    # Columns are unit eigenvectors, eigenvalues descending; the first is (1, 0, -1)/sqrt(2).
    np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.abs(eigvec[:, 0]), [2**-0.5, 0, 2**-0.5], atol=0.02)
    # Variance along it: (80 * sqrt 2)^2 = 12800 in 0-255 units -> /255^2 in [0, 1] -> x255.
    assert info["rgb_eigval"][0] == pytest.approx(12800 / 255**2 * 255, rel=0.02)
    assert info["rgb_eigval"][0] >= info["rgb_eigval"][1] >= info["rgb_eigval"][2] >= 0


def test_validation_split_with_labels_file_reuses_the_class_list(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=3, images_per_class=4, seed=0)
    # Validation files of classes 1 and 2 only: labels must still follow the stored list.
    val = tmp_path / "val"
    val.mkdir()
    lines = []
    for i, synset in enumerate(["n00000002", "n00000001", "n00000002"]):
        Image.fromarray(_pattern(40, 50, i)).save(val / f"ILSVRC2012_val_{i:08d}.JPEG")
        lines.append(f"ILSVRC2012_val_{i:08d}.JPEG {synset}")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    _convert(tmp_path / "train", out, resize_shorter=32)
    summary = _convert(val, out, split="validation", labels_file=str(tmp_path / "labels.txt"),
                       resize_shorter=32)
    assert summary.num_examples == 3
    records = sorted(_read_split(out, "validation"), key=lambda r: r[schema.IMAGE_FILENAME])
    assert [r[schema.CLASS_LABEL] for r in records] == [2, 1, 2]
    assert [r[schema.CLASS_SYNSET] for r in records] == [b"n00000002", b"n00000001", b"n00000002"]
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info["splits"]) == {"train", "validation"}
    assert info["splits"]["train"]["num_examples"] == 12
    # A class outside the stored list is an error naming it.
    (tmp_path / "bad_labels.txt").write_text("ILSVRC2012_val_00000000.JPEG n09999999\n")
    with pytest.raises(conversion.ConversionError, match="n09999999"):
        _convert(val, out, split="validation2", labels_file=str(tmp_path / "bad_labels.txt"))


def test_synsets_file_orders_the_labels(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=3, images_per_class=2, seed=0)
    (tmp_path / "synsets.txt").write_text("n00000002\nn00000000\nn00000001\n")
    _convert(tmp_path / "train", tmp_path / "out", synsets_file=str(tmp_path / "synsets.txt"), resize_shorter=32)
    for record in _read_split(tmp_path / "out", "train"):
        synset = record[schema.CLASS_SYNSET].decode()
        assert record[schema.CLASS_LABEL] == ["n00000002", "n00000000", "n00000001"].index(synset)


def test_no_input_files_is_an_error_and_writes_nothing(tmp_path):
    (tmp_path / "empty" / "n00000000").mkdir(parents=True)
    result = _run_cli(f"--input_dir={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}",
                      check=False)
    assert result.returncode == 1
    assert "has no input files" in result.stderr
    assert not glob.glob(str(tmp_path / "out" / "train-*"))


def test_shards_mix_classes_and_are_identical_across_worker_counts(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=4, images_per_class=10, seed=0)
    common = [f"--input_dir={tmp_path / 'train'}", "--resize_shorter=40", "--num_shards=4", "--progress=false"]
    _run_cli(*common, f"--output_dir={tmp_path / 'one'}", "--workers=1")
    _run_cli(*common, f"--output_dir={tmp_path / 'two'}", "--workers=2")
    one, two = _shard_bytes(tmp_path / "one"), _shard_bytes(tmp_path / "two")
    assert list(one) == [f"train-0000{i}-of-00004" for i in range(4)]
    assert one == two
    assert (tmp_path / "one" / "dataset_info.json").read_bytes() == (tmp_path / "two" / "dataset_info.json").read_bytes()
    shard_labels = [{int(r[schema.CLASS_LABEL]) for r in map(
        lambda s: tf.io.parse_single_example(s, schema.feature_spec()),
        tf.data.TFRecordDataset(str(tmp_path / "one" / name)))} for name in one]
    assert all(len(labels) >= 2 for labels in shard_labels)
    assert sum(1 for _ in tf.data.TFRecordDataset(sorted(glob.glob(str(tmp_path / "one" / "train-*"))))) == 40


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=4, images_per_class=40,
                                 min_size=200, max_size=320, seed=0)
    common = [sys.executable, "-m", "pipelines.convert", f"--input_dir={tmp_path / 'train'}",
              "--resize_shorter=256", "--num_shards=8", "--workers=1", "--progress=false"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(common + [f"--output_dir={tmp_path / 'reference'}"], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(common + [f"--output_dir={interrupted}"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not glob.glob(str(interrupted / "train-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = glob.glob(str(interrupted / "train-*"))
    assert 1 <= len(partial) < 8, "the kill should land between the first and the last shard"
    # Nothing incomplete sits under a final name: each final shard equals the reference's.
    reference = _shard_bytes(tmp_path / "reference")
    for path in partial:
        assert open(path, "rb").read() == reference[os.path.basename(path)]
    result = subprocess.run(common + [f"--output_dir={interrupted}"], cwd=REPO, env=env,
                            check=True, capture_output=True, text=True, timeout=300)
    assert f"{len(partial)} already complete" in result.stdout
    assert _shard_bytes(interrupted) == reference
    assert not glob.glob(str(interrupted / ".*.tmp"))


def test_rerun_removes_stale_temporaries_and_refuses_other_arguments(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=2, images_per_class=4, seed=0)
    out = tmp_path / "out"
    _convert(tmp_path / "train", out, resize_shorter=32, num_shards=2)
    stale = out / ".train-00001-of-00002.tmp"
    stale.write_bytes(b"half a shard")
    summary = _convert(tmp_path / "train", out, resize_shorter=32, num_shards=2)
    assert summary.shards_reused == 2 and summary.shards_written == 0
    assert not stale.exists()
    with pytest.raises(conversion.ConversionError, match="other arguments"):
        _convert(tmp_path / "train", out, resize_shorter=48, num_shards=2)
    with pytest.raises(conversion.ConversionError, match="another shard count"):
        _convert(tmp_path / "train", out, resize_shorter=32, num_shards=4)


def test_verify_names_a_corrupt_shard(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=2, images_per_class=6, seed=0)
    out = tmp_path / "out"
    _convert(tmp_path / "train", out, resize_shorter=32, num_shards=2)
    report = verification.verify_dataset(str(out), decode=True, log=lambda _: None)
    assert report.exit_code == 0 and report.counts == {"train": 12}
    shard = out / "train-00001-of-00002"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a record
    shard.write_bytes(bytes(data))
    report = verification.verify_dataset(str(out), log=lambda _: None)
    assert report.exit_code == 1
    assert any("train-00001-of-00002" in problem and "corrupt" in problem for problem in report.problems)


def test_default_shard_counts():
    assert conversion.default_num_shards("train", 1_281_167) == 1024
    assert conversion.default_num_shards("validation", 50_000) == 128
    assert conversion.default_num_shards("train", 650) == 6
    assert conversion.default_num_shards("validation", 20) == 1


def _is_pool_worker(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" not in f.read()  # not multiprocessing's tracker
    except OSError:
        return False


def test_a_killed_worker_fails_the_run_instead_of_hanging(tmp_path):
    synthetic.write_image_folder(tmp_path / "train", num_classes=4, images_per_class=100,
                                 min_size=400, max_size=500, seed=0)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.convert", f"--input_dir={tmp_path / 'train'}",
         f"--output_dir={tmp_path / 'out'}", "--num_shards=8", "--workers=2", "--progress=false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = []
    deadline = time.monotonic() + 60
    while not children and time.monotonic() < deadline:
        result = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True)
        # Pool workers, not multiprocessing's resource tracker.
        children = [int(pid) for pid in result.stdout.split() if _is_pool_worker(pid)]
        time.sleep(0.05)
    # Kill a worker once the workers are writing shards (a temporary shard is on disk).
    while not glob.glob(str(tmp_path / "out" / ".train-*.tmp")):
        assert time.monotonic() < deadline and process.poll() is None, "no shard being written within 60 s"
        time.sleep(0.01)
    os.kill(children[-1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "A worker process died" in stderr
    # Whatever is under a final name is complete; a rerun finishes the job.
    _run_cli(f"--input_dir={tmp_path / 'train'}", f"--output_dir={tmp_path / 'out'}", "--num_shards=8",
             "--workers=2", "--progress=false")
    assert sum(1 for _ in tf.data.TFRecordDataset(sorted(glob.glob(str(tmp_path / "out" / "train-*"))))) == 400


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_every_image_once(tmp_path, capsys, workers):
    synthetic.write_image_folder(tmp_path / "train", num_classes=3, images_per_class=10, min_size=40, max_size=60)
    summary = _convert(tmp_path / "train", tmp_path / "out", resize_shorter=40, num_shards=3, workers=workers,
                       progress=True)
    assert summary.num_examples == 30
    err = capsys.readouterr().err
    # tqdm's bar (or log line) ends at the whole split, counted across the worker processes.
    assert "Converting train" in err and "30/30" in err, err
    # A rerun of a complete split has nothing to do and shows no bar.
    rerun = _convert(tmp_path / "train", tmp_path / "out", resize_shorter=40, num_shards=3, workers=workers,
                     progress=True)
    assert rerun.shards_reused == 3 and "Converting" not in capsys.readouterr().err


def test_a_failing_shard_stops_the_conversion_promptly_naming_it(tmp_path):
    """A shard that cannot be written fails the run at once: the shards not yet started are
    cancelled (not converted first, hours on ImageNet), and the error names the shard."""
    synthetic.write_image_folder(tmp_path / "train", num_classes=4, images_per_class=40, min_size=40,
                                 max_size=60, seed=0)
    out = tmp_path / "out"
    # The first shard's final name is taken by a folder: renaming the finished shard fails.
    (out / "train-00000-of-00016").mkdir(parents=True)
    with pytest.raises(conversion.ConversionError, match=r"Writing .*train-00000-of-00016 failed") as failed:
        _convert(tmp_path / "train", out, resize_shorter=40, num_shards=16, workers=2)
    assert "rerun the same command" in str(failed.value)
    written = glob.glob(str(out / "train-*-of-00016"))
    assert len(written) - 1 <= 8, written  # (the folder, and those that were already under way)
    assert not glob.glob(str(out / ".train-*.tmp"))


def test_splits_converted_at_the_same_time_both_reach_dataset_info(tmp_path, monkeypatch):
    """dataset_info.json is read again when a split is recorded: a split converted meanwhile
    into the same folder (train, while validation runs) keeps its entry."""
    from pipelines.conversion import converter

    synthetic.write_image_folder(tmp_path / "train", num_classes=3, images_per_class=4, min_size=40,
                                 max_size=60, seed=0)
    synthetic.write_image_folder(tmp_path / "val", num_classes=3, images_per_class=2, min_size=40, max_size=60,
                                 seed=1, flat_with_labels=str(tmp_path / "labels.txt"))
    out = tmp_path / "out"
    run_tasks = converter._run_tasks

    def validation_with_train_meanwhile(config, tasks, **kwargs):
        if config.split == "validation":  # the train conversion runs and ends meanwhile
            _convert(tmp_path / "train", out, resize_shorter=40)
        return run_tasks(config, tasks, **kwargs)

    monkeypatch.setattr(converter, "_run_tasks", validation_with_train_meanwhile)
    _convert(tmp_path / "val", out, split="validation", labels_file=str(tmp_path / "labels.txt"), resize_shorter=40)
    info = schema.read_dataset_info(str(out))
    assert set(info["splits"]) == {"train", "validation"}
    assert info["splits"]["train"]["num_examples"] == 12 and info["splits"]["validation"]["num_examples"] == 6
    assert "rgb_mean" in info  # the training split's statistics survive too


def test_without_a_resize_an_rgb_jpeg_is_kept_byte_for_byte_and_only_what_must_be_is_reencoded():
    from pipelines.conversion.images import encode_rgb_jpeg

    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)

    def encoded(image, format_name, **options):
        buffer = io.BytesIO()
        image.save(buffer, format=format_name, **options)
        return buffer.getvalue()

    rgb_jpeg = encoded(Image.fromarray(pixels), "JPEG", quality=90)
    kept, height, width, rgb = encode_rgb_jpeg(rgb_jpeg, resize_shorter=0, quality=95)
    assert kept == rgb_jpeg and (height, width) == (40, 50) and rgb.shape == (40, 50, 3)
    # Resized, it is a new JPEG of the new size.
    resized, height, width, _ = encode_rgb_jpeg(rgb_jpeg, resize_shorter=20, quality=95)
    assert resized != rgb_jpeg and (height, width) == (20, 25)
    # CMYK and grayscale JPEGs and a PNG must become RGB JPEGs: re-encoded, decoding as RGB.
    for data in (encoded(Image.fromarray(pixels).convert("CMYK"), "JPEG"),
                 encoded(Image.fromarray(pixels).convert("L"), "JPEG"),
                 encoded(Image.fromarray(pixels), "PNG")):
        again, height, width, _ = encode_rgb_jpeg(data, resize_shorter=0, quality=95)
        assert again != data and (height, width) == (40, 50)
        decoded = Image.open(io.BytesIO(again))
        assert decoded.format == "JPEG" and decoded.mode == "RGB"
