"""``python -m service``: serve on LB_PORT with LB_WORKERS workers (defaults 7100 and 1)."""

from __future__ import annotations

import os

from sanic import Sanic
from sanic.worker.loader import AppLoader


def main() -> None:
    from service.app import settings

    loader = AppLoader("service.app:app")
    app = loader.load()
    host = os.environ.get("LB_HOST", "0.0.0.0")
    app.prepare(host=host, port=settings.port, workers=settings.workers, access_log=False)
    Sanic.serve(primary=app, app_loader=loader)


if __name__ == "__main__":
    main()
