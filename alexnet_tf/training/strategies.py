"""Choosing the tf.distribute strategy, and where this process stands in it: which worker it
is, and whether it writes the run directory."""

import logging

import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")

# A collective that waits longer than this fails, so a dead worker stops the others
# instead of hanging them. Generous: a step of the paper's model on a slow CPU is seconds.
COLLECTIVE_TIMEOUT_SECONDS = 60.0

# How to get TensorFlow's CUDA libraries with this package (setup.cfg's `gpu` extra).
GPU_INSTALL_COMMAND = "pip install -e '.[gpu]'"

logger = logging.getLogger(__name__)


class StrategyError(RuntimeError):
    """The strategy asked for cannot be built here; the message names --strategy and what to do."""


class NoGpuError(StrategyError):
    """MirroredStrategy was asked for where TensorFlow sees no GPU; the message says what to do."""


def split_cpu(num_virtual_cpus):
    """Splits the CPU into logical devices (before TensorFlow initialises its devices).

    Lets MirroredStrategy run over several replicas on a CPU-only machine, as TensorFlow's
    own tests do.
    """
    if num_virtual_cpus <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_virtual_cpus)])
    except RuntimeError as error:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != num_virtual_cpus:
            raise RuntimeError(
                f"Cannot split the CPU into {num_virtual_cpus} devices: TensorFlow already "
                f"initialised {current} ({error}).") from error


def cluster_workers():
    """Number of workers (chief included) TF_CONFIG names; 1 without TF_CONFIG."""
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec().as_dict()
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) or 1


def create_strategy(name="auto", *, num_virtual_cpus=0, tpu_address=""):
    """A tf.distribute strategy by name.

    auto: MultiWorkerMirroredStrategy when TF_CONFIG names several workers; else
    MirroredStrategy over every GPU when there are any (or over the virtual CPUs when
    `num_virtual_cpus` > 1); else the default strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Expected strategy to be one of {STRATEGIES}. Received: {name!r}")
    from alexnet_tf.training import slurm

    try:  # inside a Slurm job step: the cluster from the allocation (TF_CONFIG), before TensorFlow starts
        slurm.configure(name)
    except slurm.SlurmAllocationError as error:
        raise StrategyError(str(error)) from None
    split_cpu(num_virtual_cpus)
    # Visible physical, not logical, devices: listing logical ones starts the runtime, after
    # which MultiWorkerMirroredStrategy can no longer configure its collectives. (Visible:
    # `tf.config.set_visible_devices([], "GPU")` hides a GPU, as tests/conftest.py does.)
    gpus = tf.config.get_visible_devices("GPU")
    if name == "auto":
        if cluster_workers() > 1:
            name = "multi_worker"
        elif gpus or num_virtual_cpus > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            if len(devices) < 2:
                # A GPU recipe on a machine (or an install) without GPUs would otherwise train,
                # silently, on one CPU: 36 images/s instead of thousands.
                in_slurm = f" ({slurm.describe_allocation()})" if slurm.job_step_tasks() else ""
                raise NoGpuError(
                    f"--strategy=mirrored, but TensorFlow sees no GPU here{in_slurm} (no CUDA device, or TensorFlow "
                    f"installed without its CUDA libraries: on a GPU machine, {GPU_INSTALL_COMMAND} installs "
                    "tensorflow[and-cuda]). To run the same recipe on this machine's CPU, add "
                    "--strategy=default after the flagfile; for CPU replicas, --num_virtual_cpus=N.")
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        # NCCL between GPUs where there are GPUs (correct by construction; ring elsewhere).
        implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                          else tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation, timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS))
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    except ValueError as error:  # TensorFlow's "Please provide a TPU Name to connect to."
        raise StrategyError(f"--strategy=tpu, but no TPU was found ({error}). Run on a Cloud TPU VM (its TPU is "
                         "found by itself) or set TPU_NAME to the TPU's name or grpc:// address; or choose "
                         "another --strategy.") from None
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def describe(strategy):
    """One line: strategy, replicas, workers and the devices this worker trains on."""
    resolver = getattr(strategy, "cluster_resolver", None)
    workers = cluster_workers() if resolver is not None else 1
    name = type(strategy).__name__
    for public, public_name in ((tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
                                (tf.distribute.MirroredStrategy, "MirroredStrategy"),
                                (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy"),
                                (tf.distribute.TPUStrategy, "TPUStrategy")):
        if isinstance(strategy, public):
            name = public_name
            break
    else:
        name = "default strategy" if name.startswith("_Default") else name
    devices = ", ".join(device.rsplit("/", 1)[-1].replace("device:", "") for device in _worker_devices(strategy))
    return f"{name}, {strategy.num_replicas_in_sync} replicas, {workers} worker(s); devices: {devices}"


def _worker_devices(strategy):
    try:
        return strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: where TensorFlow places ops, its first GPU or the CPU
        return [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]


def is_chief(strategy):
    """Whether this process writes the run directory (checkpoints, logs, flags, exports): the
    chief of the strategy's cluster, or worker 0 of a cluster without one; any process of a
    strategy without a cluster. The one rule: every writer of model_dir asks it."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_position(strategy):
    """(number of workers, this worker's index) of the strategy's cluster; the chief is 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1, 0
    spec = resolver.cluster_spec().as_dict()
    workers = sorted(spec.get("chief", [])) + list(spec.get("worker", []))
    index = resolver.task_id + (len(spec.get("chief", [])) if resolver.task_type == "worker" else 0)
    return len(workers), index
