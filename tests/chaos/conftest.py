"""The chaos suite's knobs, in one place, and the record of its figures.

The short profile runs with every ``pytest`` run. ``PREFORK_CHAOS=long``
selects the long one (more rounds, more requests, longer storms);
``PREFORK_CHAOS_SEED=N`` changes the seed of every random choice;
``PREFORK_CHAOS_REPORT=FILE`` writes the figures of the run (requests,
failures, and how each failure is explained) as JSON lines to FILE.
"""

import dataclasses
import json
import os

import pytest


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    seed: int
    # random kill -9 of workers under load
    kill_workers: int  # workers of the server
    kill_clients: int  # keep-alive clients
    kill_rounds: int  # workers killed
    # signal storms under keep-alive load
    storm_clients: int
    hup_signals: int
    usr2_upgrades: int
    ttin_ttou_signals: int
    recycle_requests: int  # requests under --max-requests 20
    sigchld_seconds: float
    sigchld_rate: int  # signals per second to the master
    # ulimit -n with many concurrent connections
    nofile: int
    concurrent_connections: int
    # mutated request heads
    mutated_heads: int
    mutation_senders: int  # connections in parallel
    # hostile applications
    exit_rounds: int
    fork_rounds: int
    leak_requests: int
    # the master killed while workers are busy or stuck
    master_kill_rounds: int


SHORT = Profile(
    name="short", seed=12,
    kill_workers=4, kill_clients=6, kill_rounds=4,
    storm_clients=3, hup_signals=5, usr2_upgrades=1, ttin_ttou_signals=8, recycle_requests=300,
    sigchld_seconds=6.0, sigchld_rate=4000,
    nofile=64, concurrent_connections=200,
    mutated_heads=5000, mutation_senders=6,
    exit_rounds=1, fork_rounds=1, leak_requests=40,
    master_kill_rounds=1,
)

LONG = Profile(
    name="long", seed=12,
    kill_workers=4, kill_clients=8, kill_rounds=30,
    storm_clients=6, hup_signals=20, usr2_upgrades=4, ttin_ttou_signals=40, recycle_requests=3000,
    sigchld_seconds=30.0, sigchld_rate=4000,
    nofile=64, concurrent_connections=500,
    mutated_heads=30000, mutation_senders=8,
    exit_rounds=5, fork_rounds=5, leak_requests=120,
    master_kill_rounds=3,
)


def _profile() -> Profile:
    chosen = os.environ.get("PREFORK_CHAOS", "short").strip().lower() or "short"
    profiles = {"short": SHORT, "long": LONG}
    if chosen not in profiles:
        raise pytest.UsageError(f"PREFORK_CHAOS must be 'short' or 'long', not {chosen!r}")
    profile = profiles[chosen]
    seed = os.environ.get("PREFORK_CHAOS_SEED")
    if seed:
        profile = dataclasses.replace(profile, seed=int(seed))
    return profile


PROFILE = _profile()

# The worker classes a scenario runs under, and the settings that select them.
WORKER_CLASSES = {
    "sync": {},
    "gthread": {"worker_class": "gthread", "threads": 4},
}
FIGURES: list[dict] = []


@pytest.fixture
def profile() -> Profile:
    return PROFILE


@pytest.fixture(params=sorted(WORKER_CLASSES))
def worker_class(request) -> dict:
    """Run the scenario once per worker class: the settings that select it."""
    return WORKER_CLASSES[request.param]


@pytest.fixture
def figures(request):
    """``figures(requests=..., failures=..., explained={...}, **more)``: what the
    scenario did, for the summary at the end of the run and the report file."""

    def record(**values):
        entry = {"scenario": request.node.name, "profile": PROFILE.name, "seed": PROFILE.seed,
                 **values}
        FIGURES.append(entry)
        path = os.environ.get("PREFORK_CHAOS_REPORT")
        if path:  # at once, and appended: also from pytest-xdist's worker processes
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    quiet = PROFILE.name == "short" and not os.environ.get("PREFORK_CHAOS_REPORT")
    if quiet and config.option.verbose <= 0:
        return
    terminalreporter.section(f"chaos figures (profile {PROFILE.name}, seed {PROFILE.seed})")
    for entry in FIGURES:
        rest = {k: v for k, v in entry.items() if k not in ("scenario", "profile", "seed")}
        terminalreporter.write_line(f"{entry['scenario']}: {json.dumps(rest, sort_keys=True)}")
