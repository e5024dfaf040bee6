"""Command line: ``python -m tsdi_ext demo``."""

from .cli import main

raise SystemExit(main())
