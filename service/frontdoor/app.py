"""``FrontDoorApp``: the ``Sanic`` class whose servers all use the front door's protocol.

``FrontDoorProtocol`` (with ``LB_PROXY_PROTOCOL``, its subclass ``ProxyProtocolFrontDoor``,
which reads the PROXY header first) is the default of ``prepare``, which every way of
serving calls (``sanic service.app``, ``app.run``, ``--single-process``) in the main
process; from there, a SIGTERM before Sanic installs its own handler is a normal exit
(status 0) rather than death by signal, and Sanic's sync manager is served by threads of
the main process, which a SIGTERM to the whole process group does not end
(``supervision.prepare_main_process``).
"""

from __future__ import annotations

from typing import Any

from sanic import Sanic

from service.frontdoor.protocol import FrontDoorProtocol
from service.frontdoor.proxy_protocol import ProxyProtocolFrontDoor
from service.frontdoor.supervision import prepare_main_process


class FrontDoorApp(Sanic):
    def prepare(self, *args: Any, protocol: Any = None, **kwargs: Any) -> None:
        prepare_main_process()  # see supervision: SIGTERM before Sanic handles it, the sync manager
        super().prepare(*args, protocol=protocol or self._front_door_protocol(), **kwargs)

    def _front_door_protocol(self) -> type[FrontDoorProtocol]:
        lb = getattr(self.ctx, "lb", None)
        if lb is not None and lb.settings.frontdoor.proxy_protocol:
            return ProxyProtocolFrontDoor
        return FrontDoorProtocol
