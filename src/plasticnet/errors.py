"""Typed errors. Each carries a one-line message that says what is wrong and how to fix it.

The command line turns any of these into that line on stderr and exit code 2; library users catch them by type.
"""


class PlasticnetError(Exception):
    """Base class of every error plasticnet raises on purpose."""


class ConfigError(PlasticnetError, ValueError):
    """An option, preset, shape or combination that makes no sense."""


class DataError(PlasticnetError):
    """A data set that is missing, partial, corrupt or in an unknown layout."""


class CheckpointError(PlasticnetError):
    """A checkpoint or run directory that cannot be read or resumed."""


class NonFiniteError(PlasticnetError):
    """A training run met a non-finite loss or gradient and stopped before updating the weights (exit code 3: the
    settings are valid, the run diverged)."""

    exit_code = 3
