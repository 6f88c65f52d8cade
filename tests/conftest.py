"""Test-suite wiring: the hypothesis profile and the real local servers."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.emulators.fixtures", "tests.emulators.sshd", "tests.emulators.seaweedfs"]

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
