"""``python -m bigain …``: see :mod:`bigain.cli`."""

import sys

from bigain.cli import main

sys.exit(main())
