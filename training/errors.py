"""Errors of the training side that several modules raise (kept apart so that no module needs
another only for its exception)."""


class DataError(ValueError):
    """The dataset on disk is missing, malformed or inconsistent."""
