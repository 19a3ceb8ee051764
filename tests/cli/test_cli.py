"""Tests of ``imprint.cli``: the ``imprint`` command line: a thin shell over library calls (see
``imprint.cli.commands``)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import EXAMPLES, error_lines, run

from imprint.cli import main


def test_a_bug_is_shown_as_one_and_a_mistake_as_one_line(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x.safetensors", "--k", "0")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err

    def broken(*args, **kwargs):
        raise KeyError("an internal invariant")

    monkeypatch.setattr("imprint.workflows.fit.fit_folder", broken)
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x.safetensors")
    assert code == 3 and "Traceback" in err and "this is a bug in imprint" in err and "please report it" in err


def test_an_array_torch_cannot_allocate_is_one_line_and_not_called_a_bug(capsys, monkeypatch, tmp_path):
    """torch's allocator raises RuntimeError, not MemoryError, when the memory left is short mid-fit: the
    command says so in one line, with the size, and keeps what it had written."""
    import torch

    (tmp_path / "x.safetensors").write_bytes(b"the previous classifier")

    def starved(*args, **kwargs):
        return torch.empty(2**50, dtype=torch.uint8)  # a real allocation failure: 1 PiB

    monkeypatch.setattr("imprint.workflows.fit.fit_folder", starved)
    code, _, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x.safetensors")
    assert code == 2 and error_lines(err) == [
        "imprint: error: out of memory: torch could not allocate 1048576.0 GiB; use fewer or smaller inputs, "
        "allow this process more memory (ulimit -v), or free memory"] and "Traceback" not in err
    assert (tmp_path / "x.safetensors").read_bytes() == b"the previous classifier"


@pytest.mark.parametrize("argv, message", [
    (["fit", "{tmp}/missing", "-o", "{tmp}/x"], "image folder not found"),
    (["fit", "{root}", "-o", "{tmp}/x", "--k", "0"], "k must be an integer >= 1"),
    (["fit", "{root}", "-o", "{tmp}/x", "--encoder", "nonsense"], "must look like 'backend:model'"),
    (["predict", "{tmp}/missing.safetensors", "{root}"], "classifier file not found"),
    (["eval", "{tmp}/garbage.safetensors", "{root}"], "corrupt or truncated"),
])
def test_user_errors_are_one_line(tmp_path, capsys, messy_folder, argv, message):
    root, _ = messy_folder
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path, root=root) for a in argv], "--quiet")
    assert code == 2
    assert len(error_lines(err)) == 1 and message in error_lines(err)[0] and "Traceback" not in err


def test_the_command_exits_with_its_code_after_threads_exit_handlers_and_output(tmp_path):
    """The `imprint` command exits as Python does (no private shortcut): a running non-daemon thread is waited
    for, exit handlers run, every line of output arrives and the exit code is main's."""
    import subprocess

    script = ("import atexit, sys, threading, time\n"
              "from pathlib import Path\n"
              f"out = Path({str(tmp_path)!r})\n"
              "atexit.register(lambda: (out / 'handler').write_text('ran'))\n"
              "threading.Thread(target=lambda: (time.sleep(0.5), (out / 'thread').write_text('done'))).start()\n"
              "sys.argv = ['imprint', *sys.argv[1:]]\n"
              "from imprint.cli import console\n"
              "console()\n")
    done = subprocess.run([sys.executable, "-c", script, "presets"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "handler").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"
    from imprint.core.presets import PRESETS

    assert all(name in done.stdout for name in PRESETS) and done.stdout.endswith("\n")
    failed = subprocess.run([sys.executable, "-c", script, "info", str(tmp_path / "missing.safetensors")],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "not found" in failed.stderr and "Traceback" not in failed.stderr


def test_libraries_that_cannot_load_for_want_of_memory_are_one_line(tmp_path):
    import resource

    def limited() -> None:  # 1.5 GiB of address space: the interpreter starts, torch cannot be mapped
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**29, resource.RLIM_INFINITY))

    done = subprocess.run([sys.executable, "-m", "imprint.cli", "predict", str(tmp_path / "missing.safetensors"),
                           str(EXAMPLES / "bag")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "classifier file not found" in done.stderr  # the arguments come first
    clf = tmp_path / "clf.safetensors"
    assert main(["fit", str(EXAMPLES), "-o", str(clf), "--preset", "qi", "--quiet"]) == 0
    done = subprocess.run([sys.executable, "-m", "imprint.cli", "predict", str(clf), str(EXAMPLES / "bag")],
                          capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("imprint: error: out of memory") and done.stderr.count("\n") == 1, done.stderr
    assert "ulimit -v" in done.stderr


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`imprint presets | head`: when the reader has gone, the command exits 0 with nothing on stderr."""
    command = f'"{sys.executable}" -m imprint.cli presets | true'  # `true` exits before a line is written
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
