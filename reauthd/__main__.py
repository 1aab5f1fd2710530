"""`python -m reauthd` runs the reauthd command."""

import sys

from reauthd.cli import main

sys.exit(main())
