"""The one way this project reads a pickle from elsewhere: an unpickler that loads only the
globals it is given, and names the file and the refused global for anything else, so a
crafted weights file runs no code (Caffe's .npy and torchvision's .pth readers use it)."""

import pickle


class AllowListUnpickler(pickle.Unpickler):
    """Loads `allowed` ({(module, name): object}) and nothing else.

    Args:
      file: the pickle stream.
      path: the file's name, for the messages.
      allowed: what each permitted global is loaded as (the real object or a stand-in).
      error: the exception class to raise (a `WeightsFileError`).
      holds: what such a file holds, for the message ("tensors in a state_dict").
      **kwargs: `pickle.Unpickler`'s (e.g. encoding).
    """

    def __init__(self, file, *, path, allowed, error, holds, **kwargs):
        super().__init__(file, **kwargs)
        self._path, self._allowed, self._error, self._holds = path, allowed, error, holds

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise self._error(
                f"{self._path}: refused to load the global '{module}.{name}'. A weights file holds only "
                f"{self._holds}; this one asks to run other code, so it was not loaded. Get the file from a "
                "source you trust.")
        return found

    def persistent_load(self, pid):
        raise self._error(f"{self._path}: refused a persistent reference ({pid!r}) in the pickle.")
