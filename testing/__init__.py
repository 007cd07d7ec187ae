"""What the tests share, in one place. Start here.

Fixtures (every test gets them by name, no import): /conftest.py
    user, api_client, browser, operator_client, api_key_for, fmu_paths, media_root,
    live_servers / live_workers / redis_broker_url (real gunicorn and Celery processes),
    fake_stripe / billing_on / billing_environment / webhook (the local fake Stripe),
    s3_server / s3_bucket / s3_storage (moto's S3 server; simulations/tests/conftest.py).

Factories (rows as the services make them):
    accounts/tests/factories.py     UserFactory (operator=True), ApiKeyFactory (.plaintext)
    simulations/tests/factories.py  ModelFactory (row only), UploadedModelFactory /
                                    upload_model (a stored FMU), SimulationFactory
                                    (queued; running, lease_expired, succeeded, failed)
    billing/tests/factories.py      PaymentFactory (paid=True), LedgerEntryFactory,
                                    CreditPackFactory

Helpers:
    testing/api.py          API clients and requests: in-process (DRF's APIClient) and
                            over HTTP to a live server (requests)
    testing/processes.py    a process's peak memory while something runs
    testing/faults.py       the platform failing, to monkeypatch in
    testing/deployment.py   fly.toml as the tests read it
    testing/database.py     xdist workers' test databases, copied from a template
                            migrated once
    fmugateway/tests/live_server.py, fmugateway/tests/s3_server.py,
    billing/tests/fake_stripe.py    the real servers the live tests start

Test FMUs: fmuengine/tests/fmus/ (build.py compiles the models that run; handwritten.py
writes small ZIPs by hand). The engine's tests import nothing from Django (import-linter),
so their helpers live under fmuengine/tests/ (sandbox_runs.py), not here.

Markers (pyproject.toml, --strict-markers): sandbox (needs root: namespaces, cgroups),
live (starts gunicorn / Celery), browser (Chromium), s3 (moto's server), stripe (the fake
Stripe server). `make test-fast` runs what needs none of root, live servers or Chromium,
as any user, on PostgreSQL (dj-stripe's tables exist only there) and Redis; `make test`
runs everything, in two processes (pytest-xdist).
"""
