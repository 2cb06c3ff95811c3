"""The interpreter's switch interval of a server worker: SERVER_SWITCH_INTERVAL, checked."""

import os
import subprocess
import sys

import pytest

from project.checks import check_switch_interval


def worker_switch_interval(**env: str) -> float:
    """Return sys.getswitchinterval() in a fresh process once it has loaded project.wsgi."""
    code = "import sys, project.wsgi; print(sys.getswitchinterval())"
    environ = {
        name: value for name, value in os.environ.items() if name != "SERVER_SWITCH_INTERVAL"
    }
    environ.update(DJANGO_SETTINGS_MODULE="project.settings", **env)
    result = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip().splitlines()[-1])


def test_a_worker_hands_the_interpreter_lock_over_every_50_ms_by_default():
    assert worker_switch_interval() == pytest.approx(0.05)


def test_server_switch_interval_sets_it():
    assert worker_switch_interval(SERVER_SWITCH_INTERVAL="0.02") == pytest.approx(0.02)


@pytest.mark.parametrize("value", [0, -0.01, 2])
def test_an_interval_python_refuses_or_past_a_second_fails_the_system_check(settings, value):
    settings.SERVER_SWITCH_INTERVAL = value
    errors = check_switch_interval()
    assert [error.id for error in errors] == ["project.E005"]
    assert errors[0].msg.startswith(f"SERVER_SWITCH_INTERVAL is {value:g}")


def test_the_default_passes_the_system_check(settings):
    settings.SERVER_SWITCH_INTERVAL = 0.05
    assert check_switch_interval() == []
