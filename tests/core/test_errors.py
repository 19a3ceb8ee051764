"""Tests of ``imprint.core.errors``: the one base class of the mistakes a user can make and the problems of their
files or machine."""
from __future__ import annotations

from conftest import run


def test_a_long_value_is_quoted_short_in_an_error(tmp_path, capsys):
    config = tmp_path / "long.yaml"
    config.write_text("name: [" + ", ".join(["x" * 50] * 5000) + "]\ndatasets: [fashion_mnist]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and len(err) < 400 and err.count("\n") == 1
