r"""Batch-1 latency of the exported serving_default (JPEG bytes) against the Keras model.

    python -m alexnet_tf.benchmarks.serving_latency [--model_dir=runs/alexnet] [--image_size=224]

Without --model_dir it builds the paper's network with fresh weights. In one run it prints
the median latency of
  keras:   a `tf.function` of the Keras model on already decoded, cropped float pixels,
           traced with the export's kernels (`portable_kernels`: TensorFlow's LRN, towers);
  export:  the reloaded SavedModel's serving_default on the JPEG bytes of a 256-px image
           (decode, crop, mean subtraction and top-5 included);
  session: the same export loaded as TF Serving loads it (`serving.session_loader`: the
           session loader, run by the SignatureDef's tensor names);
and their ratios (goal <= 1.2: what serving adds), then the Keras model on this machine's
fastest kernels ("auto": fused LRN, one grouped convolution), i.e. what portability costs.
"""

import statistics
import tempfile
import time

from absl import app
from absl import flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A run directory (default: a fresh paper model).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Input side of a fresh model.")
_REPEATS = flags.DEFINE_integer("repeats", 50, "Timed calls of each (after 5 warm-up calls).")


def _median_seconds(fn, repeats):
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from alexnet_tf import build_alexnet, portable_kernels, run_dir
    from alexnet_tf.serving import saved_model, session_loader
    from pipelines import dataset as datasets

    if _MODEL_DIR.value:
        model, spec, _ = run_dir.load_model(_MODEL_DIR.value)
        class_names, stats = spec.get("class_names", ()), run_dir.statistics_of(spec)
    else:
        model = build_alexnet(1000, image_size=_IMAGE_SIZE.value)
        class_names, stats = (), datasets.DatasetStatistics()
    image_size = model.input.shape[1]
    stored = round(image_size * 256 / 224)
    pixels = np.random.default_rng(0).integers(0, 256, size=(stored, stored * 4 // 3, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(pixels, quality=90)
    with tempfile.TemporaryDirectory() as scratch:
        path = saved_model.export_model(model, export_dir=scratch, class_names=class_names, statistics=stats)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        image_bytes = tf.reshape(jpeg, [1])
        export_seconds = _median_seconds(lambda: serve(image_bytes=image_bytes)["probabilities"].numpy(),
                                         _REPEATS.value)
        with session_loader.SessionModel(path) as served:
            request = {"image_bytes": np.array([jpeg.numpy()], dtype=object)}
            session_seconds = _median_seconds(lambda: served.run("serving_default", request), _REPEATS.value)
        decoded = tf.cast(datasets.decode_for_eval(jpeg, image_size=image_size)[tf.newaxis], tf.float32)
        keras_fn = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))
        with portable_kernels():
            portable_fn = keras_fn.get_concrete_function(decoded)
        keras_seconds = _median_seconds(lambda: portable_fn(decoded).numpy(), _REPEATS.value)
        fastest_fn = tf.function(lambda x: tf.nn.softmax(model(x, training=False)))
        fastest_seconds = _median_seconds(lambda: fastest_fn(decoded).numpy(), _REPEATS.value)
    print(f"model: {image_size}px, {model.count_params():,} parameters; JPEG {pixels.shape[1]}x{pixels.shape[0]}")
    print(f"keras tf.function on decoded pixels: {keras_seconds * 1e3:7.2f} ms (median of {_REPEATS.value}; "
          "the export's kernels)")
    print(f"export serving_default on JPEG bytes: {export_seconds * 1e3:7.2f} ms")
    print(f"ratio export / keras: {export_seconds / keras_seconds:.2f} (goal <= 1.2)")
    print(f"export through the session loader (TF Serving's path): {session_seconds * 1e3:7.2f} ms, "
          f"ratio {session_seconds / keras_seconds:.2f} of keras")
    print(f"keras on this machine's fastest kernels: {fastest_seconds * 1e3:7.2f} ms "
          f"(the export's portable kernels cost {keras_seconds / fastest_seconds:.2f}x)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
