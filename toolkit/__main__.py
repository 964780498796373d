"""``python -m toolkit``: the same as the ``samplesift`` command."""

from toolkit.cli import main

raise SystemExit(main())
