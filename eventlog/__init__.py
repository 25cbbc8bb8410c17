"""The online event log: the second contract beside ``bundle/``, torch-free.

What the service accepts online (items, deletes, interactions) is written here durably
(:mod:`eventlog.store`: SQLite or PostgreSQL through SQLAlchemy, with the change feed the
replicas follow), and the nightly job reads it back as one snapshot (:mod:`eventlog.snapshot`).
The service writes it and training reads it; neither imports the other.
"""

from eventlog.snapshot import Logged, read_logged
from eventlog.store import Change, Store, StoredInteraction, StoredItem, normalize_url

__all__ = ["Change", "Logged", "Store", "StoredInteraction", "StoredItem", "normalize_url",
           "read_logged"]
