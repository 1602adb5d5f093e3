"""The one error of a weights file made elsewhere that cannot be used."""


class WeightsFileError(ValueError):
    """A weights file that is not (or not safely) a layout this project reads; the message
    names the file and says why."""
