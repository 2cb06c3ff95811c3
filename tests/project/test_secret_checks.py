"""A production start (DEBUG off) needs SECRET_KEY and API_KEY_SECRET from its configuration:
a secret made up at start-up would change at every restart of a container without a volume,
and with it every JWT and every API key digest."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from project.checks import check_secrets

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("SECRET_KEY", "API_KEY_SECRET")


def manage_check(data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `manage.py check` with the environment of this test run minus both secrets, plus
    `env`, and a data folder of its own."""
    base = {name: value for name, value in os.environ.items() if name not in SECRETS}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, "DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_start_with_debug_off_and_no_secrets_fails_naming_both(tmp_path):
    result = manage_check(tmp_path, DEBUG="False")

    assert result.returncode != 0
    assert "project.E001" in result.stderr
    assert "SECRET_KEY is not set" in result.stderr
    assert "project.E002" in result.stderr
    assert "API_KEY_SECRET is not set" in result.stderr
    assert not (tmp_path / "secret_key").exists()  # nothing generated behind the operator's back


def test_a_start_with_debug_off_and_both_secrets_passes(tmp_path):
    result = manage_check(tmp_path, DEBUG="False", SECRET_KEY="s" * 50, API_KEY_SECRET="k" * 50)

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_local_development_with_debug_on_generates_a_secret_once(tmp_path):
    first = manage_check(tmp_path, DEBUG="True")

    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "secret_key").read_text()
    assert len(secret) >= 50
    assert oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"


def test_the_check_names_each_missing_secret(settings):
    settings.DEBUG = False
    settings.UNSET_SECRETS = ["API_KEY_SECRET"]
    errors = check_secrets()
    assert [error.id for error in errors] == ["project.E002"]
    assert "API_KEY_SECRET" in errors[0].hint

    settings.UNSET_SECRETS = []
    assert check_secrets() == []


def test_the_check_lets_local_development_run_without_them(settings):
    settings.DEBUG = True
    settings.UNSET_SECRETS = ["SECRET_KEY", "API_KEY_SECRET"]
    assert check_secrets() == []


def local_secrets_then(command: str, data_dir: Path) -> subprocess.CompletedProcess:
    """Run `command` after the exports of `python -m project.local_secrets`, as `make run` does."""
    base = {name: value for name, value in os.environ.items() if name not in SECRETS}
    python = shlex.quote(sys.executable)
    return subprocess.run(
        ["bash", "-c", f'eval "$({python} -m project.local_secrets)" && {command}'],
        cwd=ROOT,
        env={**base, "DATA_DIR": str(data_dir), "DEBUG": "False"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_run_gets_local_secrets_that_pass_the_check_and_stay(tmp_path):
    python = shlex.quote(sys.executable)
    first = local_secrets_then(f'echo "$SECRET_KEY" && {python} manage.py check', tmp_path)
    again = local_secrets_then('echo "$SECRET_KEY"', tmp_path)

    assert first.returncode == 0, first.stderr
    key = first.stdout.splitlines()[0]
    assert key == (tmp_path / "secret_key").read_text().strip()
    assert again.stdout.splitlines()[0] == key
