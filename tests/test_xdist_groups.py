"""The suite's own set-up: tests grouped with `xdist_group` (tests/conftest.py groups those
sharing an expensive module fixture) run in one worker, so that fixture runs once."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("suite_probe")
def test_grouped_tests_carry_their_group_under_loadgroup(request):
    # xdist's loadgroup tells the scheduler the group through a node-id suffix; pytest 9.2
    # ignores it (pytest-xdist#1386) and every worker then reruns the shared fixtures.
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not an xdist worker under --dist loadgroup (pytest -n 0)")
    assert request.node.nodeid.endswith("@suite_probe"), (
        f"xdist did not group {request.node.nodeid!r}: keep pytest < 9.2 (pyproject.toml)"
    )
