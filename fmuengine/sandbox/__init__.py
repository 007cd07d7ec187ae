"""The sandbox that runs untrusted FMUs; see server.py."""
