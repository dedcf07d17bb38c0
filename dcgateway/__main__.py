"""``python -m dcgateway`` -> :func:`dcgateway.cli.main`."""

from .cli import main

raise SystemExit(main())
