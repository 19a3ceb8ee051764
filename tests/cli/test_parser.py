"""Tests of ``imprint.cli.parser``: the ``imprint`` argument parser."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import EXAMPLES, ROOT, TESTS, run

from imprint import ImprintClassifier
from imprint.cli import main


@pytest.fixture(scope="module")
def plugin():
    sys.path.insert(0, str(TESTS))
    import plugin_stage

    return plugin_stage


def test_the_command_line_takes_plugins_and_their_settings(plugin, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "clf.safetensors"
    code = main(["fit", str(ROOT / "examples" / "fashion"), "-o", str(out), "--plugin", "plugin_stage",
                 "--generation", "trimmed_mean", "--trim", "0.25", "--quiet", "--shots", "5"])
    assert code == 0, capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    assert "generation=trimmed_mean" in capsys.readouterr().out
    assert main(["fit", "--help", "--plugin", "plugin_stage"]) == 0
    assert "--trim TRIM" in capsys.readouterr().out
    assert main(["fit", str(ROOT / "examples" / "fashion"), "-o", str(out), "--plugin", "no_such_module_here"]) == 2
    assert "--plugin no_such_module_here: cannot import it" in capsys.readouterr().err


def test_the_top_level_help_and_every_subcommand_help_run(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0 and "fit" in out and "predict" in out and not err
    assert run(capsys, "-h")[0] == 0
    from imprint.cli.commands import COMMANDS

    for command in COMMANDS:
        code, out, err = run(capsys, command, "--help")
        assert code == 0 and out.startswith(f"usage: imprint {command}"), (command, err)


def test_a_typo_is_one_line_naming_the_fix(capsys, tmp_path):
    code, out, err = run(capsys, "fit", EXAMPLES, "-o", tmp_path / "x", "--generation", "kmean")
    assert code == 2 and err.count("\n") == 1 and "did you mean 'kmeans'" in err and "usage" not in err
    code, out, err = run(capsys, "fitt")
    assert code == 2 and err.count("\n") == 1 and "invalid choice: 'fitt'" in err


def test_help_and_mistakes_are_answered_before_torch_is_imported(tmp_path, mixture):
    """Every command's --help, and a mistake in its arguments, paths, preset, settings or output, is answered
    without importing torch (1.2 s) or scikit-learn: the fit flags come from the settings snapshot. (A grid
    config's contents are checked against the stages themselves, after they are imported.)"""
    X, y = mixture
    ImprintClassifier(method="gda").fit(X[::10], y[::10]).save(tmp_path / "c.safetensors")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("not imprint's")
    folder, classifier, missing = str(EXAMPLES), str(tmp_path / "c.safetensors"), str(tmp_path / "missing")
    mistakes = [
        (["fit", missing, "-o", str(tmp_path / "o.safetensors")], "image folder not found"),
        (["fit", folder, "-o", str(tmp_path / "o.safetensors"), "--k", "0"], "k must be an integer >= 1"),
        (["fit", folder, "-o", str(tmp_path / "o.safetensors"), "--preset", "gdaa"], "unknown preset 'gdaa'"),
        (["fit", folder, "-o", str(foreign)], "is not a classifier file imprint wrote"),
        (["fit", folder, "-o", str(tmp_path / "o.safetensors"), "--test-dir", missing], "image folder not found"),
        (["fewshot", folder, "--metric", "cosine"], "unknown metric 'cosine'"),
        (["embed", missing, "-o", str(tmp_path / "e.npz")], "image folder not found"),
        (["embed", folder, "-o", str(foreign)], "exists and is not an embeddings store"),
        (["collapse", str(foreign)], "is a file, not an image folder"),
        (["inspect", folder, "-o", str(tmp_path / "r"), "--preset", "nope"], "unknown preset 'nope'"),
        (["eval", missing + ".safetensors", folder], "classifier file not found"),
        (["eval", classifier, missing], "image folder not found"),
        (["predict", str(foreign), folder], "not a readable classifier file"),
        (["export", classifier, "-o", str(foreign)], "is not an ONNX model imprint wrote"),
        (["serve", classifier, "--port", "70000"], "is not a port number"),
        (["grid", missing + ".yaml", "--out", str(tmp_path / "g")], "file not found"),
        (["report", str(tmp_path)], "holds no grid results (no manifest.json)"),
    ]
    code = ("import json, sys\nfrom imprint.cli import main\nresults = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    results.append([main(argv), 'torch' in sys.modules, 'sklearn' in sys.modules])\n"
            "print(json.dumps(results))")
    helps = [[command, "--help"] for command in ("fit", "fewshot", "predict", "eval", "embed", "serve", "grid",
                                                 "report")]
    done = subprocess.run([sys.executable, "-c", code, json.dumps(helps + [argv for argv, _ in mistakes])],
                          capture_output=True, text=True, timeout=120)
    results = json.loads(done.stdout.splitlines()[-1])
    assert results == [[0, False, False]] * len(helps) + [[2, False, False]] * len(mistakes), done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("imprint: error:")]
    assert len(errors) == len(mistakes)
    for line, (argv, expected) in zip(errors, mistakes):
        assert expected in line, (argv, line)
    assert "--shrinkage" in done.stdout and "--projection-dim" in done.stdout


def test_fit_help_says_what_a_plain_fit_runs(capsys):
    code, out, _ = run(capsys, "fit", "--help")
    assert code == 0 and "a fit runs --method auto" in out and "tukey / mean / mahalanobis" in out
    assert "(default: kmeans, with a stage flag; else the chosen method's)" in " ".join(out.split())
