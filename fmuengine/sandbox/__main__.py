"""`python -m fmuengine.sandbox`: the sandbox server (see server.py)."""

from fmuengine.sandbox.server import main

main()
