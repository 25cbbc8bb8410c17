"""The online event log: the second contract beside ``bundle/``, torch-free.

What the service accepts online (items, deletes, interactions) is written here durably
(:mod:`eventlog.store`: SQLite or PostgreSQL through SQLAlchemy, with the change feed the
replicas follow), and the nightly job reads it back as one snapshot (:mod:`eventlog.snapshot`).
The lists the service served are logged too, and scored against the interactions that came
after them (:mod:`eventlog.served`: the online evaluation).
The service writes it and training reads it; neither imports the other.
"""

from eventlog.served import ServedList, add_served, online_hit_rates, prune_served
from eventlog.snapshot import Logged, read_logged
from eventlog.store import Change, Store, StoredInteraction, StoredItem, normalize_url

__all__ = ["Change", "Logged", "ServedList", "Store", "StoredInteraction", "StoredItem",
           "add_served", "normalize_url", "online_hit_rates", "prune_served", "read_logged"]
