"""``python -m bigain.bench``: see :mod:`bigain.bench`."""

from bigain.bench.cli import main

raise SystemExit(main())
