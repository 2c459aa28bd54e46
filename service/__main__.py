"""``python -m service``: serve on LB_HOST:LB_PORT with LB_WORKERS workers; ``--help`` lists
every setting, ``--check`` validates the configuration (``service.cli``)."""

from __future__ import annotations

from service.cli import main

if __name__ == "__main__":
    main()
