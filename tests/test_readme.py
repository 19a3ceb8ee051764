"""Every Python block in README.md runs as written (in a scratch folder beside the bundled examples). A block
that names a CLIP model runs with the small random-weight open_clip model in its place, since no weights can be
downloaded here; nothing else is changed."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
CLIP = "open_clip:ViT-B-32/laion2b_s34b_b79k"


def test_the_readme_has_python_blocks_and_commands_use_the_installed_entry_point():
    assert len(BLOCKS) >= 4
    commands = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [line for block in commands for line in block.splitlines()]
    assert not [line for line in lines if line.startswith("imprint ")]  # always .venv/bin/imprint


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_python_block_runs_as_written(index, tmp_path, monkeypatch, tiny_model_name, capsys):
    code = BLOCKS[index]
    if CLIP in code:
        code = code.replace(f'create_encoder("{CLIP}")', f'create_encoder("open_clip:{tiny_model_name}/random")')
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPRINT_CACHE_DIR", str(tmp_path / "cache"))
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out  # every block shows something
    assert os.getcwd() == str(tmp_path)
