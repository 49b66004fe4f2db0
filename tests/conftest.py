"""Shared pytest setup. Env that must be in place before gcsfs or prefect import goes first."""

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

pytest_plugins = [
    "fixtures.emulator",
    "fixtures.gcs",
]
