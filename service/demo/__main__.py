"""``python -m service.demo``: see :mod:`service.demo`."""

from service.demo.launcher import main

if __name__ == "__main__":
    raise SystemExit(main())
