"""User-facing errors: the CLI prints these as one line (no traceback) and exits with status 2."""


class RLVRError(Exception):
    """A problem with the user's input (config, data file, task name), explained in one line."""


class ConfigError(RLVRError):
    pass


class DataError(RLVRError):
    pass
