"""How fuzzed answers of the HTTP API are judged, shared by the fuzzers of the destinations
(tests/security/test_served.py) and the deliveries (tests/api/deliveries_fuzz.py)."""

from __future__ import annotations

from typing import Any


def record_answer(response: Any, case: Any, stats: dict[str, Any], failures: list[str]) -> None:
    """Count one answer into ``stats`` (``cases``, ``5xx``, ``bad_envelope``, ``2xx``): a 5xx,
    or a 4xx without the API's error envelope (``request_info.success`` false and a string
    ``message``), is also described in ``failures``."""
    stats["cases"] += 1
    if response.status_code >= 500:
        stats["5xx"] += 1
        failures.append(f"{case.method} {case.path}: {response.status_code}")
    elif response.status_code >= 400:
        try:
            info = response.json()["request_info"]
            ok = info["success"] is False and isinstance(info["message"], str)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            stats["bad_envelope"] += 1
            failures.append(f"{case.method} {case.path}: {response.text[:200]}")
    else:
        stats["2xx"] = stats.get("2xx", 0) + 1
