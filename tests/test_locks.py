"""Cell locks read anything, name their holder, expire across hosts and count in-process deaths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.grid import load_grid
from benchmark.results import (
    LOCK_EXPIRY_SECONDS,
    UNREADABLE_LOCK_GRACE_SECONDS,
    live_locks,
    lock_path,
    sweep_stale_locks,
    sweep_temp_files,
    temp_prefix,
    try_claim,
)
from tests.conftest import GRIDS, finished_record


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(results: Path, digest: str, content: bytes, age: float = 0.0) -> Path:
    path = lock_path(results, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def holder(**fields: object) -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": 0, **fields}).encode()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff\xfe garbage \x80",
        b'{"pid": "abc", "host": "x"}',
        b'{"host": "x"}',
        b"[1, 2]",
        b'{"pid": -1}',
        b"",
    ],
    ids=["binary", "non-integer pid", "no pid", "not an object", "negative pid", "empty"],
)
def test_an_unreadable_lock_never_crashes_and_is_taken_over_once_old(tmp_path: Path, content: bytes) -> None:
    write_lock(tmp_path, "fresh", content)
    claim = try_claim(tmp_path, "fresh")
    assert not claim.taken and "unreadable" in claim.describe()  # it may be a run writing its lock now
    write_lock(tmp_path, "old", content, age=UNREADABLE_LOCK_GRACE_SECONDS + 5)
    assert try_claim(tmp_path, "old").taken
    assert json.loads(lock_path(tmp_path, "old").read_text())["pid"] == os.getpid()


def test_another_hosts_lock_is_taken_over_once_its_heartbeat_is_old(tmp_path: Path) -> None:
    """A restarted container gets a new host name: its old lock must not block the cell for good."""
    write_lock(tmp_path, "beating", holder(host="elsewhere"), age=60)
    claim = try_claim(tmp_path, "beating")
    assert not claim.taken
    assert "beating.lock" in claim.describe() and "on host elsewhere" in claim.describe()
    write_lock(tmp_path, "silent", holder(host="elsewhere"), age=LOCK_EXPIRY_SECONDS + 5)
    assert try_claim(tmp_path, "silent").taken


def test_a_takeover_counts_the_deaths_of_in_process_holders_only(tmp_path: Path) -> None:
    pid = dead_pid()
    write_lock(tmp_path, "a", holder(pid=pid, in_process=True, deaths=1))
    assert try_claim(tmp_path, "a", in_process=True).deaths == 2
    assert json.loads(lock_path(tmp_path, "a").read_text())["deaths"] == 2
    write_lock(tmp_path, "b", holder(pid=pid, in_process=False))  # a --jobs driver: its cells ran in workers
    assert try_claim(tmp_path, "b").deaths == 0


def test_stale_locks_beside_records_and_dead_writers_temp_files_are_swept(tmp_path: Path) -> None:
    cell = load_grid(GRIDS / "smoke.toml").cells[0]
    digest = cell.config_hash
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / f"{digest}.json").write_text(json.dumps(finished_record(cell)))
    write_lock(tmp_path, digest, holder(pid=dead_pid()))  # a run killed before it released the lock
    write_lock(tmp_path, "0" * 16, holder(pid=dead_pid()))  # no record: left for the claim to count
    write_lock(tmp_path, "1" * 16, holder())  # a live holder
    assert live_locks(tmp_path) == {"1" * 16}
    assert sweep_stale_locks(tmp_path) == [digest]
    dead = cells / f"{temp_prefix(digest + '.json').replace(str(os.getpid()), str(dead_pid()))}x.tmp"
    live = cells / f"{temp_prefix(digest + '.json')}y.tmp"
    dead.write_text("half a record")
    live.write_text("a record being written")
    assert sweep_temp_files(cells) == 1
    assert not dead.exists() and live.exists()
