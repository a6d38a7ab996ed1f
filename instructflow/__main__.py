"""`python -m instructflow`: the `instructflow` command, for where its script is not on PATH."""

import sys

from instructflow.flows.cli import main

if __name__ == "__main__":
    sys.exit(main())
