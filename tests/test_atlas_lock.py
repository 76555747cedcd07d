"""The atlas write lock: a second writer is refused while the first runs, a crashed holder does not block forever,
another host's lock is respected, and one process may re-enter its own lock."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from unitlens.atlas.lock import acquire, release, writing
from unitlens.errors import AtlasBusy, BadInput
from unitlens.recording import record
from unitlens.zoo import enumerate_units

HOLD = """
import sys, time
from unitlens.atlas.lock import writing
with writing(sys.argv[1], "record --k 50"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_while_the_first_runs(exact_model, random_images, tmp_path):
    out = tmp_path / "atlas"
    proc = _holder(out)
    try:
        layers = enumerate_units(exact_model.model, skip_first_last=False)
        with pytest.raises(AtlasBusy, match=r"being written by 'record --k 50' \(pid \d+") as err:
            record(exact_model, str(random_images), out, layers, k=5, progress=False, num_workers=0)
        assert "delete" in str(err.value) and not (out / "manifest.json").exists()  # refused before any write
    finally:
        proc.kill()
        proc.wait()
    # the holder died without releasing: its lock is stale and taken over (with a warning), not blocking forever
    with pytest.warns(UserWarning, match="stale lock"):
        result = record(exact_model, str(random_images), out, layers, k=5, progress=False, num_workers=0)
    assert result.atlas.complete and not (out / ".lock").exists()


def test_another_hosts_lock_is_respected_and_the_lock_is_reentrant(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname() + "-elsewhere", "pid": os.getpid(),
                                "command": "study run", "started": time.time()}))
    with pytest.raises(AtlasBusy, match="study run"):
        acquire(tmp_path, "mis")
    lock.unlink()
    with writing(tmp_path, "study run"):
        with writing(tmp_path, "mis"):  # the same process: re-entrant
            assert json.loads(lock.read_text())["command"] == "study run"
        assert lock.exists()  # the outer holder still holds it
    assert not lock.exists()
    path = acquire(tmp_path, "x")
    release(path)
    assert not lock.exists()


def test_a_file_or_a_read_only_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is a file"):
        acquire(tmp_path / "file", "record")
    with pytest.raises(BadInput, match="writable location"):  # /proc refuses new folders, even to root
        acquire("/proc/unitlens-atlas", "record")
