"""The error of bad reproduction input, below every ``repro`` module that raises it (``plan``, ``released``,
``job``): one line naming the value, file or folder and what was expected."""


class PlanError(ValueError):
    """Bad sweep/job input (unknown protocol, odd opts, unreadable config, a released-weights folder
    not in the expected layout)."""
