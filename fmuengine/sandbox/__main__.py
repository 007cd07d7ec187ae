"""`python -m fmuengine.sandbox`: see daemon.py."""

from fmuengine.sandbox.daemon import main

main()
