"""Tests of ``imprint.core.errors``: the one base class of the mistakes a user can make and the problems of their
files or machine."""
from __future__ import annotations

import pytest
from conftest import FIXTURES, run


def test_a_long_value_is_quoted_short_in_an_error(tmp_path, capsys):
    config = tmp_path / "long.yaml"
    config.write_text("name: [" + ", ".join(["x" * 50] * 5000) + "]\ndatasets: [fashion_mnist]\n")
    code, _, err = run(capsys, "grid", config, "--out", tmp_path / "out")
    assert code == 2 and len(err) < 400 and err.count("\n") == 1


def test_a_feature_whose_extra_is_not_installed_names_the_extra():
    """`imprint serve` without the serve extra: one line naming the extra, before any model is loaded."""
    import subprocess
    import sys

    from imprint.core.errors import MissingExtra, require

    with pytest.raises(MissingExtra, match=r"imprint serve needs no_such_module_x.*pip install 'imprint\[serve\]'"):
        require(("json", "no_such_module_x"), "serve", "imprint serve")
    blocked = "import sys; sys.modules['fastapi'] = None; from imprint.cli import console; console()"
    done = subprocess.run([sys.executable, "-c", blocked, "serve", str(FIXTURES / "v3_taught.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "imprint serve needs fastapi, which is not installed: pip install 'imprint[serve]'" in done.stderr
