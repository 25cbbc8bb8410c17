"""Errors of the training side that several modules raise (kept apart so that no module needs
another only for its exception)."""


class DataError(ValueError):
    """The dataset on disk is missing, malformed or inconsistent."""


#: Exit codes of the operator's commands beside 0 (published or done), 1 (gate rejected) and 2
#: (a user's mistake): another run holds the retrain lock; stopped by SIGTERM (128 + 15).
LOCKED_EXIT = 3
STOPPED_EXIT = 143
