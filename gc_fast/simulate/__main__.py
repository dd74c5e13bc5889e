"""python -m gc_fast.simulate: the command line (gc_fast.simulate.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
