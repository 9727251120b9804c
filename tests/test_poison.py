"""Records that kill their worker: the crash journal's counting. A job whose model aborts its
worker on one record is the `poison-record` case of `make faults` (faults/cases.py): on a
MiniCluster with Python workers apart, one run of the whole suite saw the task not restarted
after the abort (the job hung), so the job-level check runs there, not in `make test`."""

from __future__ import annotations

from scoring.poison import CrashJournal


def test_a_record_in_flight_when_the_worker_died_twice_is_poisoned_and_one_that_scores_is_forgotten(tmp_path):
    path = tmp_path / "journal" / "job-0.json"
    first = CrashJournal(path)
    first.scoring([b"innocent", b"poison"])  # ...and the process dies here
    second = CrashJournal(path)
    assert (second.crashes_of(b"innocent"), second.crashes_of(b"poison")) == (1, 1)
    assert not second.poisoned(b"poison") and second.crashes_of(b"other") == 0
    second.scoring([b"innocent"])
    second.scored()  # scored alone, fine: forgotten
    second.scoring([b"poison"])  # alone, and the process dies again
    third = CrashJournal(path)
    assert third.crashes_of(b"innocent") == 0 and third.poisoned(b"poison")
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    path.write_bytes(b'{"in_flight": ["ab')  # cut short: starts afresh rather than failing the task
    assert CrashJournal(path).crashes == {}
    assert CrashJournal(None).crashes == {}  # no journal: nothing counted
