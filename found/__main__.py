"""``python -m found``: the ``found`` command run by this interpreter, whatever ``found`` is on PATH."""
from .cli.main import console

if __name__ == "__main__":
    console()
