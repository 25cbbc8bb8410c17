"""``python -m service``: serve with uvicorn on RECSYS_HOST:RECSYS_PORT (one process: the
online state lives in memory; scale with replicas that share PostgreSQL and Redis), with
deadlines on reading requests and the keep-alive and concurrency limits of the settings
(``service.server``)."""

import logging

from service.server import serve
from service.settings import Settings

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
serve(Settings())
