"""``python -m service``: serve with uvicorn on RECSYS_HOST:RECSYS_PORT (one process: the
online state lives in memory; scale with replicas that share PostgreSQL and Redis)."""

import logging

import uvicorn

from service.settings import Settings

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
settings = Settings()
uvicorn.run("service.app:app", host=settings.host, port=settings.port, log_level="info",
            access_log=settings.access_log)
