"""Processes are found by the mark in their environment, orphans included, and stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from infra.procs import alive, marked_processes, stop_marked


def test_a_marked_orphan_is_found_and_killed_and_an_unmarked_process_is_left_alone():
    mark = uuid.uuid4().hex
    # A shell that starts a grandchild in the background and exits: the grandchild is an
    # orphan, as a Python worker is once its TaskManager was killed.
    subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 &"], env={**os.environ, "TEST_MARK": mark},
                   check=True, capture_output=True)
    bystander = subprocess.Popen(["sleep", "60"], env={**os.environ, "TEST_MARK": "other"})
    try:
        orphans = marked_processes("TEST_MARK", mark)
        assert len(orphans) == 1 and os.getppid() != orphans[0]
        started = time.monotonic()
        killed = stop_marked("TEST_MARK", mark, grace_s=1)
        assert time.monotonic() - started >= 1, "killed before its grace period"
        assert len(killed) == 1 and killed[0].startswith(f"{orphans[0]} sleep 60")
        time.sleep(0.2)
        assert not alive(orphans[0]) and marked_processes("TEST_MARK", mark) == []
        assert alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_a_marked_process_that_ends_within_its_grace_period_is_not_reported():
    mark = uuid.uuid4().hex
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"],
                     env={**os.environ, "TEST_MARK": mark})
    assert stop_marked("TEST_MARK", mark, grace_s=10) == []
