"""The module-level application that ``sanic service.app`` loads.

A setting that cannot be used stops start-up here with one line naming it, rather than a
traceback from deep inside a worker.
"""

from __future__ import annotations

import sys

from service import tls
from service.factory import create_app
from service.settings import SettingsError, load_settings

try:
    settings = load_settings()
    tls.check(settings)  # the certificate files, read and matched before anything serves
except SettingsError as exc:
    print(f"load-balancer: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

app = create_app(settings)
