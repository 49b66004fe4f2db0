"""Shared pytest setup. Env that must be in place before gcsfs or prefect import goes first."""

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

pytest_plugins = [
    "fixtures.emulator",
    "fixtures.gcs",
    "fixtures.pipeline",
    "fixtures.prefect",
]

# Quiet Prefect (its teardown otherwise prints hundreds of lines of CancelledError noise).
for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)
