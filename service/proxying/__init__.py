"""The proxy's machinery: where a request goes (``routing``), the headers at the boundary
(``headers``), one exchange with one target (``exchange``) and the WebSocket pass-through
(``websocket_tunnel``). The HTTP surface that drives them is ``service.blueprints.proxy``.
"""
