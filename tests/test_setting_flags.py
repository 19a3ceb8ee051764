"""The settings snapshot behind the fit and fewshot flags: current with the declarations, used only while their
source files are unchanged, and the same help either way."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import imprint.cli.setting_flags as setting_flags_module
from imprint.cli.commands import COMMANDS
from imprint.cli.parser import build_parser
from imprint.cli.setting_flags import SNAPSHOT, live_flags, read_snapshot, setting_flags

REFRESH = "the shipped settings snapshot is out of date: refresh it with python -m imprint.cli.setting_flags"


def _helps(flags) -> dict[str, str]:
    parser = build_parser(COMMANDS, flags)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: commands[name].format_help() for name in ("fit", "fewshot")}


def test_the_shipped_snapshot_is_current_with_the_declarations():
    """Compared in a fresh interpreter, where no test has registered a plug-in stage: the same source files, the
    same settings (fields, stage names, users) and the same stage descriptions."""
    code = """if True:
        import json
        from imprint.cli.setting_flags import declaring_modules, live_flags, read_snapshot, SNAPSHOT
        shipped, live = read_snapshot(), live_flags()
        same_sources = sorted(json.loads(SNAPSHOT.read_text())["sources"]) == declaring_modules()
        same = shipped is not None and shipped == live and all(
            (a.setting.stages is None) == (b.setting.stages is None)
            and (a.setting.stages is None or a.setting.stages.names() == b.setting.stages.names())
            for a, b in zip(shipped.settings, live.settings))
        print(json.dumps([shipped is not None, same_sources, same]))"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.splitlines()[-1]) == [True, True, True], REFRESH + "\n" + done.stderr


def test_fit_and_fewshot_help_read_the_same_from_the_snapshot_and_the_declarations():
    assert _helps(read_snapshot()) == _helps(live_flags())


def test_a_snapshot_of_other_source_files_or_a_damaged_one_is_not_used(tmp_path, monkeypatch):
    data = json.loads(SNAPSHOT.read_text())
    edited = dict(data, sources={**data["sources"], "stages/metric.py": "0" * 64})
    cases = {"edited.json": json.dumps(edited), "format.json": json.dumps(dict(data, format=99)),
             "truncated.json": SNAPSHOT.read_text()[:500], "fields.json": json.dumps(dict(data, settings=[{}]))}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert read_snapshot(tmp_path / name) is None, name
    assert read_snapshot(tmp_path / "missing.json") is None
    (tmp_path / "current.json").write_text(json.dumps(data))
    assert read_snapshot(tmp_path / "current.json") == read_snapshot()
    monkeypatch.delitem(sys.modules, "imprint.estimator.configuration")  # as in a fresh `imprint fit`
    monkeypatch.setattr(setting_flags_module, "live_flags", lambda: "the declarations")
    monkeypatch.setattr(setting_flags_module, "SNAPSHOT", tmp_path / "current.json")
    assert setting_flags() == read_snapshot()
    monkeypatch.setattr(setting_flags_module, "SNAPSHOT", tmp_path / "edited.json")
    assert setting_flags() == "the declarations"
