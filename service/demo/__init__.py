"""A demo, not part of the load balancer: ``python -m service.demo``.

It starts small stand-ins for the system's services on 127.0.0.1 (an API gateway that
echoes requests, a blog, an auth and a user service that only answer ``/stats``, and a
dashboard UI that serves the static page in ``static/``), then starts the real load
balancer (``sanic service.app``) as a child process pointed at them, so the whole system
can be seen working in a browser on one machine.

Nothing in ``service`` imports this package; it talks to the load balancer only through its
environment variables and over HTTP, as the real services do.
"""
