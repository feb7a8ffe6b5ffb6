"""One holder per folder: contention names the holder, a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from facevae.common.errors import FacevaeError
from facevae.common.lock import LOCK_NAME, LockedError, hold, read_holder

# Holds the folder argv[1] until its stdin closes; with "fork", first forks a child that sleeps.
HOLDER = """
import os, sys, time
from facevae.common.lock import hold
with hold(sys.argv[1], what="testing the lock"):
    if sys.argv[2:] == ["fork"]:
        ready_r, ready_w = os.pipe()
        child = os.fork()
        if child == 0:  # past fork, so past the lock module's at-fork hook
            os.write(ready_w, b"1")
            time.sleep(120)
            os._exit(0)
        os.read(ready_r, 1)
        print(child, flush=True)
    print("held", flush=True)
    sys.stdin.read()
"""


def start_holder(folder, *extra):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline().strip()]
    if extra:
        lines.append(proc.stdout.readline().strip())
    assert lines[-1] == "held", lines
    return proc, lines


def kill(proc):
    proc.kill()
    proc.wait()


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    proc, _ = start_holder(tmp_path)
    try:
        with pytest.raises(LockedError) as caught:
            with hold(tmp_path, what="preparing a dataset"):
                pass
        message = str(caught.value)
        assert isinstance(caught.value, FacevaeError) and "\n" not in message
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and "testing the lock" in message
        assert str(tmp_path / LOCK_NAME) in message
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert not (tmp_path / LOCK_NAME).exists()  # released and removed
    with hold(tmp_path, what="preparing a dataset") as path:
        assert read_holder(tmp_path).pid == os.getpid()
        assert json.loads(path.read_text())["what"] == "preparing a dataset"
    assert read_holder(tmp_path) is None


def test_the_same_process_cannot_hold_twice(tmp_path):
    with hold(tmp_path, what="first"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()} .*first"):
            with hold(tmp_path, what="second"):
                pass
    with hold(tmp_path):  # the failed attempt left the first's release intact
        pass


def test_the_lock_of_a_killed_holder_is_taken_over_with_a_note(tmp_path):
    proc, _ = start_holder(tmp_path)
    kill(proc)
    assert read_holder(tmp_path).pid == proc.pid  # a SIGKILL leaves the file behind
    notes = []
    with hold(tmp_path, what="after", note=notes.append):
        assert read_holder(tmp_path).pid == os.getpid()
    assert len(notes) == 1 and f"pid {proc.pid}" in notes[0] and "no longer running" in notes[0]
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_forked_child_does_not_keep_a_dead_holders_lock(tmp_path):
    proc, (child, _) = start_holder(tmp_path, "fork")
    child = int(child)
    try:
        kill(proc)
        os.kill(child, 0)  # the child lives on
        notes = []
        with hold(tmp_path, note=notes.append):
            pass
        assert len(notes) == 1 and f"pid {proc.pid}" in notes[0]
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("where", ["another host", "still running"])
def test_a_lock_file_that_cannot_be_proven_stale_is_refused(tmp_path, where):
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        host = "elsewhere.example" if where == "another host" else socket.gethostname()
        pid = 4_000_000 if where == "another host" else live.pid
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "what": "training"}))
        with pytest.raises(LockedError) as caught:
            with hold(tmp_path):
                pass
        message = str(caught.value)
        assert where in message and f"pid {pid} on host {host}" in message and "delete the lock file" in message
        assert read_holder(tmp_path).pid == pid  # left for the user to judge
    finally:
        live.stdin.close()
        live.wait()
