"""``python -m service``: serve with uvicorn on RECSYS_HOST:RECSYS_PORT (one process: the
online state lives in memory; scale with replicas that share PostgreSQL and Redis), with
deadlines on reading requests and the keep-alive and concurrency limits of the settings
(``service.server``), logging structured lines (``service.logs``).

``python -m service --help`` lists every setting (variable, type, default, description) and
exits. The service is configured by ``RECSYS_*`` variables only: any argument is an error.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from service.settings import Settings, settings_help

USAGE = """usage: RECSYS_...=... python -m service [--help]

Serves a recommendation bundle over HTTP (docs at /docs). Configured by environment variables
only; RECSYS_* variables that nothing reads are warned about at start.

Settings:
"""


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE + settings_help())
        return 0
    if argv:
        print(f"python -m service takes no arguments (got {' '.join(argv)}): configure it with "
              "RECSYS_* environment variables; --help lists them", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except ValidationError as error:
        problems = "; ".join(f"RECSYS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                             for e in error.errors())
        print(f"invalid configuration: {problems} (python -m service --help lists the settings)",
              file=sys.stderr)
        return 2
    # imported here: --help and a bad configuration need neither uvicorn nor structlog
    from service.logs import configure
    from service.server import serve

    configure(settings.log_format, settings.log_level)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
