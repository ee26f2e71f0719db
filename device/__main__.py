"""``python -m device``: the same as the ``massager`` command."""

import sys

from device.cli import main

sys.exit(main())
