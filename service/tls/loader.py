"""How the listening context reaches Sanic, whichever way the service was started.

Sanic builds a worker's TLS context with ``app.certloader_class`` (its documented hook for
custom certificate loading), in the worker itself, just before it listens: the same step
for ``sanic service.app``, ``python -m service`` and ``--single-process``. A context
cannot be made in the main process and handed over (it does not pickle), and a context
made by the worker is the one that worker can rotate. So the app carries this loader
instead of an ``ssl=`` argument, and both entry points serve HTTPS from the settings alone.
"""

from __future__ import annotations

import ssl
from typing import Any

from sanic.worker.loader import CertLoader

from service.tls.rotation import LiveCertificate


class SettingsCertLoader(CertLoader):
    """The context of ``LB_TLS_CERT``/``LB_TLS_KEY``, live (see ``service.tls.rotation``)."""

    def load(self, app: Any) -> ssl.SSLContext | None:
        lb = app.ctx.lb
        lb.tls = LiveCertificate(lb.settings.tls)
        if lb.settings.frontdoor.proxy_protocol:
            # the PROXY header comes before the handshake: Sanic listens on plain TCP and the
            # front door starts TLS itself after it (service.frontdoor.proxy_protocol)
            return None
        return lb.tls.server_context
