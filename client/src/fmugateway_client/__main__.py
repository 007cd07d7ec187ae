"""`python -m fmugateway_client` is `fmugw`, for environments without the console script."""

from fmugateway_client.cli import main

raise SystemExit(main())
