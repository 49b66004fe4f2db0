"""Shared pytest setup. Env that must be in place before gcsfs or prefect import goes first."""

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# fixtures.prefect first: the others import helpers from it, and pytest rewrites a plugin's
# asserts only when it is the first to import it ("Module already imported so cannot be
# rewritten" otherwise).
pytest_plugins = [
    "fixtures.prefect",
    "fixtures.emulator",
    "fixtures.gcs",
    "fixtures.pipeline",
]

# Quiet Prefect (its teardown otherwise prints hundreds of lines of CancelledError noise).
for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",  # a guard, on a busy machine
}.items():
    os.environ.setdefault(_key, _value)


# Modules whose fixtures deploy flows or start servers once per module: one worker runs each
# unit whole, first (the largest units go first). The two team modules are units of their own:
# both use the run's shared server (on PostgreSQL, tests/fixtures/prefect.py), each on its own
# work pools, so they may run side by side on two workers. Every other test is scheduled on its
# own, so the few long ones spread over the workers instead of queueing behind their file's
# neighbours. (xdist's own ``--dist loadgroup`` cannot do this on pytest 9: it renames node ids
# through an attribute pytest 9 no longer reads.)
WHOLE_UNITS = {
    "test_team_postgres.py": "team-postgres",
    "test_deployments.py": "deployments",
    "test_team_browser.py": "team-browser",
    "test_bench_smoke.py": "bench",
}


# Single tests that each run the CLI or a flow in subprocesses, or wait on a server of their own
# (tens of seconds of wall clock, much of it waiting): they start right after the units above, so
# that no worker is left running one of them alone at the end while the others sit idle.
LONG_FIRST = (
    "test_interrupts.py",
    "test_crash_resume.py",
    "test_cli.py",
    "test_faults.py",
    "test_ledger.py",
    "test_secrets.py",
)


def pytest_collection_modifyitems(items):  # type: ignore[no-untyped-def]
    """Every worker sorts the same way (stable: LONG_FIRST's modules in its order, then the rest
    as collected), so xdist still sees one collection."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))


def pytest_xdist_make_scheduler(config, log):  # type: ignore[no-untyped-def]
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return WHOLE_UNITS.get(module.rsplit("/", 1)[-1], nodeid)

    return Scheduling(config, log)
