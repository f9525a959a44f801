"""Errors that the command line reports as one clear message, without a traceback."""


class AnomalibLiteError(Exception):
    """Base class: a problem the user can fix (bad option, missing data or weights)."""


class ConfigError(AnomalibLiteError):
    """An option has a bad value; the message names the option and the valid choices."""


class DataError(AnomalibLiteError):
    """A dataset is missing, laid out wrongly, or holds files that cannot be read."""


class WeightsError(AnomalibLiteError):
    """Pretrained weights are missing and cannot be fetched."""


class TrainingError(AnomalibLiteError):
    """Training cannot go on (for example a non-finite loss)."""


class NonFiniteError(AnomalibLiteError):
    """A model produced NaN/inf anomaly scores or maps; the message names the images."""
