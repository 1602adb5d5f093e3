r"""Runs tf.data service servers (TensorFlow's own) for disaggregated input processing.

    # On one CPU host: a dispatcher and a worker.
    python -m pipelines.data_service --port=5050 --dispatcher --worker_port=5051
    # On more CPU hosts: workers only.
    python -m pipelines.data_service --dispatcher_address=HOST:5050 --worker_port=5051
    # On the training hosts:
    python -m alexnet_tf.train ... --tf_data_service=grpc://HOST:5050

The training input pipeline (read, decode, crop, flip, lighting, batch) then runs on the
workers, each file of an epoch read by one of them; the trainers only receive batches.
SIGTERM or SIGINT stops the servers cleanly.

Run them only on a trusted network. TensorFlow's DispatchServer and WorkerServer take a port,
not an address: they listen on every interface of the machine, accept any client without
authentication, and a worker runs whatever dataset graph a client sends, which can read any
file this user can read. Keep the ports on a private network or behind a firewall.
"""

import signal
import socket
import threading

from absl import app
from absl import flags
from absl import logging

_PORT = flags.DEFINE_integer("port", 5050, "Dispatcher port (with --dispatcher).", lower_bound=0, upper_bound=65535)
_DISPATCHER = flags.DEFINE_bool("dispatcher", False, "Run a dispatcher in this process.")
_DISPATCHER_ADDRESS = flags.DEFINE_string("dispatcher_address", None, "HOST:PORT of the dispatcher to serve as a worker.")
_WORKER_PORT = flags.DEFINE_integer("worker_port", 0, "Worker port (0: any free port).", lower_bound=0,
                                    upper_bound=65535)
_NO_WORKER = flags.DEFINE_bool("no_worker", False, "Run only the dispatcher.")
_WORKER_ADDRESS = flags.DEFINE_string("worker_address", None, "Address the dispatcher gives trainers for this worker (default: this host's name).")


def start_servers(*, dispatcher_port=None, dispatcher_address=None, worker=True, worker_port=0,
                  worker_address=None):
    """Starts a dispatcher and/or a worker. Returns the list of servers (each has .stop())."""
    import tensorflow as tf

    service = tf.data.experimental.service
    servers = []
    if dispatcher_port is not None:
        dispatcher = service.DispatchServer(service.DispatcherConfig(port=dispatcher_port))
        servers.append(dispatcher)
        dispatcher_address = dispatcher.target.split("://", 1)[1]
        logging.info("tf.data service dispatcher at %s", dispatcher.target)
    if worker:
        host = worker_address or socket.gethostname()
        servers.append(service.WorkerServer(service.WorkerConfig(
            dispatcher_address=dispatcher_address, port=worker_port,
            worker_address=f"{host}:%port%")))
        logging.info("tf.data service worker registered with %s", dispatcher_address)
    return servers


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _DISPATCHER.value and not _DISPATCHER_ADDRESS.value:
        raise app.UsageError("Pass --dispatcher (run one here) or --dispatcher_address=HOST:PORT.")
    servers = start_servers(
        dispatcher_port=_PORT.value if _DISPATCHER.value else None,
        dispatcher_address=_DISPATCHER_ADDRESS.value, worker=not _NO_WORKER.value,
        worker_port=_WORKER_PORT.value, worker_address=_WORKER_ADDRESS.value)
    logging.warning(
        "The tf.data service listens on every network interface of this machine, without "
        "authentication, and its workers run any dataset graph a client sends: run it only on a "
        "trusted network (a private network or firewalled ports).")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print("serving; SIGTERM or Ctrl-C stops", flush=True)
    stop.wait()
    for server in reversed(servers):
        server.stop()
    logging.info("tf.data service servers stopped")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
