"""The one exception family the package raises for bad input.

The CLI prints these as one line (``error: <file>: <problem>``) instead of a traceback; notebooks
show the same message.
"""


class DepthmaskError(Exception):
    """Base class: a problem a user can fix, with a message that names the file and the problem."""


class InputError(DepthmaskError):
    """An input image or folder cannot be used."""


class DatasetError(DepthmaskError):
    """A dataset folder is missing, incomplete or damaged, or cannot be written."""


class TeacherUnavailable(DepthmaskError):
    """A depth teacher's weights cannot be loaded (offline, wrong path, missing package)."""


class WeightsUnavailable(DepthmaskError):
    """Pretrained encoder weights cannot be fetched (offline, blocked download)."""


class ConfigError(DepthmaskError, ValueError):
    """A training value that does not exist or has the wrong type (``--set KEY=VALUE``, a profile)."""


class DeviceUnavailable(DepthmaskError):
    """The device asked for (``--device cuda``) is not on this machine."""
