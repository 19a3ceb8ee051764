"""Tests of ``imprint.core.atomic``: atomic file writes: a reader sees the old file or the complete new one, never a
partial one."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

from conftest import run


def test_temporary_files_of_killed_saves_are_cleaned_by_the_next_save(tmp_path):
    script = (f"import time, numpy as np\n"
              f"from imprint.core.atomic import atomic_write_bytes\n"
              f"import imprint.core.atomic as a\n"
              f"import os\n"
              f"real = os.replace\n"
              f"def stuck(*args):\n"
              f"    time.sleep(60)\n"
              f"a.os.replace = stuck\n"
              f"atomic_write_bytes({str(tmp_path / 'clf.safetensors')!r}, b'x' * 1000000)\n")
    seen = set()
    for _ in range(3):  # three saves killed after their data was written, before the rename
        process = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.monotonic() + 60
        while not any(".imprint-" in p.name and p.name.split("-")[-2] == str(process.pid)
                      for p in tmp_path.glob(".clf.safetensors.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        leftovers = list(tmp_path.glob(".clf.safetensors.*.tmp"))
        assert len(leftovers) == 1  # each save removed the leftovers of the killed one before it
        seen.add(leftovers[0].name)
    assert len(seen) == 3
    (tmp_path / "other.txt.imprint-elsewhere-1-x.tmp").write_text("not a leftover of this file")
    from imprint.core.atomic import atomic_write_bytes

    atomic_write_bytes(tmp_path / "clf.safetensors", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.safetensors", "other.txt.imprint-elsewhere-1-x.tmp"]
    assert (tmp_path / "clf.safetensors").read_bytes() == b"whole"


def test_written_files_get_normal_permissions(capsys, tmp_path, three_classes, cache_flags):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "c.safetensors"
        assert run(capsys, "fit", three_classes, "-o", out, *cache_flags)[0] == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o077)
        assert run(capsys, "fit", three_classes, "-o", tmp_path / "private.safetensors", *cache_flags)[0] == 0
        assert stat.S_IMODE((tmp_path / "private.safetensors").stat().st_mode) == 0o600
    finally:
        os.umask(previous)
