"""A streaming reverse proxy and stats aggregator for a small microservice system.

Start it with ``sanic service.app --workers N`` or ``python -m service``; build an app in
code with :func:`service.factory.create_app`.
"""
