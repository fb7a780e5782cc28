"""``python -m found``: the ``found`` command run by this interpreter, whatever ``found`` is on PATH."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
