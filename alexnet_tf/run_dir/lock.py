"""One trainer per run directory: the lock file's `flock`."""

import fcntl
import os
import socket
import time

from alexnet_tf.run_dir.layout import LOCK_FILE

class RunDirInUseError(RuntimeError):
    """Another process is training into the run directory; the message names it."""


class RunDirLock:
    """The one-trainer lock of a run directory: an exclusive `flock` on model_dir/.train.lock.

    The kernel releases it when its process ends, however it ends (SIGKILL, out of memory),
    so a lock left by a killed trainer never blocks a resume; a live holder makes `acquire`
    fail at once with its host and pid. (`flock` is local to a machine: on a file system
    shared between machines, NFS included, it may not exclude a trainer on another host.)
    """

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self._file = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirInUseError(
                f"{os.path.dirname(self.path)} is in use by a trainer ({holder}). Wait for it to end, "
                "stop it, or train into another --model_dir.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
