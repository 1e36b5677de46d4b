"""``python -m workflows`` runs the ``gigaseg`` command."""

import sys

from workflows.cli import main

sys.exit(main())
