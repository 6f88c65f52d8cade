"""The guard reads its switch alone (one variable, not the whole settings object); it must
give exactly what the settings object gives for every value."""

from __future__ import annotations

import pytest

from destinations import _guard
from destinations._settings import env_name, settings


def test_the_guard_reads_the_settings_variable() -> None:
    assert env_name("allow_private_endpoints") == _guard.ALLOW_PRIVATE_ENDPOINTS_ENV


@pytest.mark.parametrize(
    "value", ["1", "true", "TRUE", " True ", " 1 ", "", " ", "0", "false", "yes", "on", "2", "tru"]
)
def test_the_guard_and_the_settings_agree(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_guard.ALLOW_PRIVATE_ENDPOINTS_ENV, value)
    assert _guard.private_endpoints_allowed() is settings().allow_private_endpoints
    assert _guard.private_endpoints_allowed() is (value.strip().lower() in ("1", "true"))
    monkeypatch.delenv(_guard.ALLOW_PRIVATE_ENDPOINTS_ENV)
    assert _guard.private_endpoints_allowed() is settings().allow_private_endpoints is False


def test_the_guard_check_loads_no_settings_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from destinations import _guard; _guard.private_endpoints_allowed(); "
        "print('pydantic_settings' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
