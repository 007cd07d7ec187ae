"""What every app stands on and no app owns: the API's error vocabulary (problem+json), its
OpenAPI conventions, request middleware, health checks and static-file plumbing.

A plain package, not a Django app: it has no models, templates, admin or commands, so
nothing needs it in INSTALLED_APPS. It imports no app (accounts, billing, simulations) and
not the configuration (`fmugateway`); apps import it. Where a piece of core needs an app
(a readiness check of the sandbox, say), the configuration names that app's function in
settings, so the dependency runs config -> app and never core -> app. Import-linter holds
this (pyproject.toml).
"""
