"""Shared fixtures: each plugin module starts one real component for the suite."""

pytest_plugins = [
    "tests.fixtures.hsm",
    "tests.fixtures.postgres",
    "tests.fixtures.identity",
    "tests.fixtures.nats",
    "tests.fixtures.redis",
    "tests.fixtures.docker",
]
