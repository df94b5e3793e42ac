"""SDS_TEST_SHARD=K/N (K from 1) keeps every Nth test from the Kth, in collection order, so ctest
runs cli_test.py as N tests side by side (tests/app/CMakeLists.txt); unset, every test runs."""
import os

import pytest


def pytest_collection_modifyitems(config, items):
    shard = os.environ.get("SDS_TEST_SHARD")
    if not shard:
        return
    try:
        k, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise pytest.UsageError(f"SDS_TEST_SHARD={shard!r}: expected K/N, e.g. 1/3")
    if not 1 <= k <= n:
        raise pytest.UsageError(f"SDS_TEST_SHARD={shard!r}: K must be between 1 and N")
    config.hook.pytest_deselected(items=[t for i, t in enumerate(items) if i % n != k - 1])
    items[:] = items[k - 1::n]
