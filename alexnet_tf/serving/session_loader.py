"""A SavedModel as TF Serving loads it: TensorFlow's session loader, not the Python object loader.

`tensorflow_model_server` (and `saved_model_cli run`) load an export with TensorFlow's C++
SavedModel loader, whose steps `tf.compat.v1.saved_model.loader.load` takes in Python:

1. import the `serve` MetaGraph into a fresh Graph and Session;
2. run the saver's restore op on `variables/` (the only way a variable gets its value here:
   a variable the saver does not list stays uninitialised, and every request reading it
   fails with "Could not find variable");
3. replay the warm-up records of `assets.extra/tf_serving_warmup_requests` (TF Serving does it
   while loading: a failing record fails the load);
4. answer each request by its SignatureDef: feed the input tensors by name, fetch the outputs
   by name.

`tf.saved_model.load` restores by the object graph instead, so an export can answer there and
still fail in TF Serving. `SessionModel` takes TF Serving's steps, so that the export (which
checks every version through it before publishing it) and the tests see what a server sees.
"""

import os

import tensorflow as tf

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving reads no more than this many


class ServingLoadError(Exception):
    """The SavedModel does not load or answer the way TF Serving loads it; the message says where."""


class SessionModel:
    """A SavedModel loaded into a `tf.compat.v1.Session`: restored by the saver's restore op
    and run by its SignatureDefs' tensor names, as TF Serving does.

        with SessionModel("runs/alexnet/export/1") as served:
            served.replay_warmup()
            outputs = served.run("serving_default", {"image_bytes": np.array([jpeg_bytes])})
    """

    def __init__(self, export_path, tags=(SERVE_TAG,)):
        self.path = export_path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), export_path)
        except Exception:
            self.session.close()
            raise
        self.signatures = dict(meta_graph.signature_def)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self.session.close()

    def run(self, signature_name, inputs, output_filter=()):
        """The outputs (numpy, by output name) of `signature_name` for `inputs` (by input name).

        As TF Serving's Predict: every input of the signature must be given and no other;
        `output_filter` names the outputs to fetch (default: all)."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingLoadError(f"{self.path} has no signature {name!r}; it has {sorted(self.signatures)}.")
        signature = self.signatures[name]
        if set(inputs) != set(signature.inputs):
            raise ServingLoadError(f"Signature {name!r} of {self.path} takes inputs {sorted(signature.inputs)}. "
                                   f"Received: {sorted(inputs)}")
        unknown = set(output_filter) - set(signature.outputs)
        if unknown:
            raise ServingLoadError(f"Signature {name!r} of {self.path} has no outputs {sorted(unknown)}; "
                                   f"it has {sorted(signature.outputs)}.")
        fetches = {key: info.name for key, info in signature.outputs.items()
                   if not output_filter or key in output_filter}
        feeds = {signature.inputs[key].name: value for key, value in inputs.items()}
        return self.session.run(fetches, feeds)

    def warmup_requests(self):
        """The warm-up file's Predict requests as (signature name, {input: ndarray}, output
        filter), in file order; none when there is no file."""
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return []
        requests = []
        for index, record in enumerate(tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS + 1)):
            if index == MAX_WARMUP_RECORDS:
                raise ServingLoadError(f"{path} holds more than {MAX_WARMUP_RECORDS} records, "
                                       "the most TF Serving reads.")
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise ServingLoadError(f"Record {index} of {path} is a {log.WhichOneof('log_type')}; "
                                       "only predict_log records are replayed here.")
            request = log.predict_log.request
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            requests.append((request.model_spec.signature_name, inputs, tuple(request.output_filter)))
        return requests

    def replay_warmup(self):
        """Runs every warm-up record through the session, as TF Serving does while loading.
        Returns the number of records; raises `ServingLoadError` naming the failing one."""
        requests = self.warmup_requests()
        for index, (signature_name, inputs, output_filter) in enumerate(requests):
            try:
                self.run(signature_name, inputs, output_filter)
            except tf.errors.OpError as error:
                raise ServingLoadError(f"Warm-up record {index} ({signature_name or DEFAULT_SIGNATURE!r}) of "
                                       f"{self.path} fails: {error_summary(error)}") from error
        return len(requests)


def error_summary(error):
    """The first telling line of a TensorFlow error (a session's errors start "Graph execution error:")."""
    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    telling = [line for line in lines if line != "Graph execution error:"]
    return (telling or lines or [type(error).__name__])[0]

