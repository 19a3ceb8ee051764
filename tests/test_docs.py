"""Every command and every Python block of README.md and docs/ runs as written, page by page in order, in a
scratch folder beside the bundled examples. A block that names a CLIP model runs with the small random-weight
open_clip model in its place, since no weights can be downloaded here; nothing else is changed.

A bash block's plain `imprint` commands run in this process, in order, through the installed command's own `main`
(the same code, without 4 to 5 seconds of start-up each); the lines between them (pipes, redirects, `&`,
heredocs, other programs) run in bash. The README's two install
commands are what `.ci/run` runs on a fresh machine, so they are checked to be there word for word, and run there."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(python|bash|text|[a-z]*)\n(.*?)```", flags=re.S)
CLIP = "open_clip:ViT-B-32/laion2b_s34b_b79k"
INSTALL = "python3 -m venv .venv && .venv/bin/pip install --no-compile -e . && "
TEST_COMMAND = '.venv/bin/pip install --no-compile -e ".[test]" && .venv/bin/python -m pytest -q'
IMPRINT_COMMAND = re.compile(r"\.venv/bin/imprint ([^|&;<>$`\\]*?)(?:\s+#.*)?")  # no pipe, redirect or variable


def segments(code: str) -> list[list[str] | str]:
    """A bash block in order as its plain imprint commands (each one's arguments) and the runs of other lines
    between them (bash code: pipes, redirects, `&`, heredocs, other programs); comments and blank lines dropped."""
    parts: list[list[str] | str] = []
    for line in code.strip().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = IMPRINT_COMMAND.fullmatch(line.strip())
        if match is not None:
            parts.append(shlex.split(match.group(1)))
        elif parts and isinstance(parts[-1], str):
            parts[-1] += line + "\n"
        else:
            parts.append(line + "\n")
    return parts


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block of a page, in order."""
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_readme_starts_with_the_two_commands_that_ci_runs():
    first, second = [code.strip() for language, code in blocks(ROOT / "README.md") if language == "bash"][:2]
    ci = (ROOT / ".ci" / "run").read_text()
    assert first.startswith(INSTALL) and first in ci  # the main job, on the base install alone
    assert second == TEST_COMMAND and second in ci


def test_every_block_is_python_bash_or_text_and_commands_use_the_installed_entry_point():
    for page in PAGES:
        for language, code in blocks(page):
            assert language in ("python", "bash", "text"), f"{page.name}: a ```{language} block"
            if language == "bash":
                assert not re.search(r"(^|&& )imprint ", code, flags=re.M), f"{page.name}: use .venv/bin/imprint"


def test_the_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = BLOCK.sub("", text)
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith(("|", "#", "![")))
    assert len(re.findall(r"[A-Za-z0-9][\w'.-]*", prose)) <= 1500
    paragraphs = re.split(r"\n\s*\n|\n(?=- )", prose)  # paragraphs and list items
    sentences = [sentence for paragraph in paragraphs
                 for sentence in re.split(r"(?<=[.!?])\s+(?=\S)", re.sub(r"\s+", " ", paragraph))]
    assert max(len(sentence.split()) for sentence in sentences) <= 60


RUNNABLE = [page for page in PAGES if any(language in ("python", "bash") for language, _ in blocks(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[page.name for page in RUNNABLE])
def test_every_block_of_a_page_runs_as_written(page, tmp_path, monkeypatch, tiny_model_name, capsys):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # .venv/bin/imprint: the imprint of this environment
    monkeypatch.chdir(tmp_path)  # the embedding cache and the encoder's graph are the run's, as for other tests
    ran = 0
    for index, (language, code) in enumerate(blocks(page)):
        name = f"{page.name} block {index}"
        if language == "python":
            if CLIP in code:
                code = code.replace(f'create_encoder("{CLIP}")',
                                    f'create_encoder("open_clip:{tiny_model_name}/random")')
            exec(compile(code, name, "exec"), {"__name__": "__docs__"})
            assert capsys.readouterr().out, f"{name} shows nothing"
        elif language == "bash":
            if code.strip() == TEST_COMMAND or code.startswith(INSTALL):
                continue  # the suite itself, and the main job that .ci/run runs before it on the base install
            shows_something = False
            for part in segments(code):
                if isinstance(part, list):
                    run_in_this_process(name, part, capsys)  # which checks that it shows something
                    shows_something = True
                    continue
                result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", part], capture_output=True,
                                        text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
                assert result.returncode == 0, \
                    f"{name} failed:\n{part}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                shows_something |= bool(result.stdout.strip() or result.stderr.strip())
            assert shows_something, f"{name} shows nothing"
        else:
            continue
        ran += 1
        assert os.getcwd() == str(tmp_path)
    assert ran


def run_in_this_process(name: str, argv: list[str], capsys) -> None:
    """One command through the imprint command's `main`, as the installed script calls it, which must succeed and
    show something; the threads it sets for its encoder are given back to the test process afterwards."""
    import torch

    from imprint.cli import main

    threads = torch.get_num_threads()
    try:
        status = main(argv)
        out, err = capsys.readouterr()
        assert status == 0, f"{name} failed: imprint {shlex.join(argv)}\n{out[-3000:]}\n{err[-3000:]}"
        assert out.strip() or err.strip(), f"{name}: imprint {shlex.join(argv)} shows nothing"
    finally:
        torch.set_num_threads(threads)


def test_the_site_builds_in_strict_mode(tmp_path):
    """mkdocs build --strict: a broken link between pages, a page left out of the navigation or an API reference
    that names nothing fails it."""
    # not --quiet: it hides the warnings from the count that strict mode fails on (mkdocs 1.6 then exits 0)
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {"cli", "python", "api"} <= {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}


def test_the_readme_links_to_pages_that_exist():
    """The site checks its pages' links (test_the_site_builds_in_strict_mode); the README's are checked here."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert links and not [link for link in links if "://" not in link and not (ROOT / link).exists()]
