"""`fmugw` as a user runs it: separate processes against a live gateway."""

from __future__ import annotations

import json
import stat
import uuid

import pytest

pytestmark = pytest.mark.live


def test_login_upload_run_and_result(gateway, fmu_paths, tmp_path):
    config_home = tmp_path / "config"
    logged_in = {"XDG_CONFIG_HOME": str(config_home)}

    login = gateway.cli("login", "--url", gateway.url, "--key", gateway.api_key, env=logged_in)
    assert login.returncode == 0, login.stderr
    assert gateway.user.email in login.stderr
    config_file = config_home / "fmugw" / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert json.loads(config_file.read_text()) == {"url": gateway.url, "api_key": gateway.api_key}

    def fmugw(*arguments: str):
        """fmugw with only the saved login: no FMUGW_* variables in its environment."""
        return gateway.cli(*arguments, env=logged_in, login_from_env=False)

    account = fmugw("account")
    assert account.returncode == 0, account.stderr
    assert gateway.user.email in account.stdout
    assert "off" in account.stdout
    assert "credit          $0.00 (0 runs)" in account.stdout  # money, since credit is money

    upload = fmugw("upload", str(fmu_paths["bouncing_ball"]))
    assert upload.returncode == 0, upload.stderr
    model_id = upload.stdout.strip()
    assert str(uuid.UUID(model_id)) == model_id
    assert "bouncing_ball" in upload.stderr

    models = fmugw("models")
    assert model_id in models.stdout and "bouncing_ball" in models.stdout
    listed = json.loads(fmugw("models", "--json").stdout)
    assert [model["id"] for model in listed] == [model_id]
    variables = fmugw("variables", model_id, "--causality", "parameter")
    assert variables.stdout.split()[:7] == [
        "name",
        "causality",
        "variability",
        "type",
        "start",
        "unit",
        "description",
    ]
    assert "restitution" in variables.stdout

    out = tmp_path / "out.csv"
    run = fmugw(
        "run",
        model_id,
        "--stop-time",
        "2",
        "--output-interval",
        "0.01",
        "--set",
        "e=0.8",
        "--output",
        "h,v",
        "--progress",
        "-o",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    run_id = run.stderr.split()[1]  # "run <id> queued"
    assert "100%" in run.stderr  # the progress bar reached its end
    assert out.read_text() == gateway.server_csv(run_id)
    assert out.read_text().splitlines()[0] == "time,h,v"
    params = gateway.client.simulation(run_id).raw["params"]
    assert params["start_values"] == {"e": 0.8}
    assert params["output"] == ["h", "v"]

    status = fmugw("status", run_id)
    assert status.stdout.split()[:2] == [run_id, "succeeded"]
    to_stdout = fmugw("result", run_id)
    assert to_stdout.returncode == 0
    assert to_stdout.stdout == gateway.server_csv(run_id)
    only_h = tmp_path / "h.csv"
    assert fmugw("result", run_id, "--variables", "h", "-o", str(only_h)).returncode == 0
    assert only_h.read_text().splitlines()[0] == "time,h"

    # The environment overrides the saved login.
    wrong_key = gateway.cli("account", env={**logged_in, "FMUGW_API_KEY": "fmu_not_a_key"})
    assert wrong_key.returncode == 1
    assert "401 Authentication required" in wrong_key.stderr


def test_exit_codes_for_usage_and_api_errors(web_only, tmp_path):
    not_logged_in = web_only.cli("models", env={"FMUGW_URL": "", "FMUGW_API_KEY": ""})
    assert not_logged_in.returncode == 2
    assert "fmugw login" in not_logged_in.stderr

    bad_usage = web_only.cli("run")
    assert bad_usage.returncode == 2
    assert "usage: fmugw run" in bad_usage.stderr

    bad_set = web_only.cli("run", str(uuid.uuid4()), "--set", "no-equals-sign")
    assert bad_set.returncode == 2
    assert "NAME=VALUE" in bad_set.stderr

    unknown_model = web_only.cli("run", str(uuid.uuid4()), "--stop-time", "1")
    assert unknown_model.returncode == 1
    assert "400 Invalid request" in unknown_model.stderr
    assert "model: No such model." in unknown_model.stderr

    missing_run = web_only.cli("result", str(uuid.uuid4()), "-o", str(tmp_path / "x.csv"))
    assert missing_run.returncode == 1
    assert "404 Not found" in missing_run.stderr
    assert not (tmp_path / "x.csv").exists()

    login_refused = web_only.cli(
        "login",
        "--url",
        web_only.url,
        "--key",
        "fmu_wrong_key",
        env={"XDG_CONFIG_HOME": str(tmp_path / "config")},
    )
    assert login_refused.returncode == 1
    assert not (tmp_path / "config" / "fmugw" / "config.json").exists()
