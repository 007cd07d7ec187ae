"""fly.toml keeps every piece of state off the machines' own disks."""

from testing.deployment import fly_config


def test_web_worker_and_billing_process_groups_and_a_release_migration():
    # Each command follows the image's ENTRYPOINT (test_deploy_image.py): the worker's
    # starts with the entrypoint's own options, then `--` and Celery.
    config = fly_config()
    assert config["processes"]["web"].startswith("gunicorn fmugateway.wsgi")
    assert " -- celery -A fmugateway worker " in config["processes"]["worker"]
    assert config["processes"]["billing"].startswith("celery -A fmugateway worker -Q billing")
    assert "migrate" in config["deploy"]["release_command"]


def test_health_checks_hit_healthz_on_the_explicit_internal_port():
    service = fly_config()["http_service"]
    assert service["internal_port"] == 8000
    assert "0.0.0.0:8000" in fly_config()["processes"]["web"]
    assert [check["path"] for check in service["checks"]] == ["/healthz"]


def test_no_per_machine_state_is_configured():
    config = fly_config()
    assert "mounts" not in config  # no volumes: a volume belongs to one machine
    assert "DATABASE_URL" not in config.get("env", {})  # a secret, never a local file
