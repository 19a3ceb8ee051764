"""Tables of a grid run: results.csv (one row per cell and seed) and summary.md (variants ranked)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from imprint.grid.manifest import read_manifest
from imprint.grid.report.stats import MIN_GROUPS, Comparison, average_ranks, compare

GROUP = ["encoder", "dataset", "task", "shots"]
MEASURED = ["accuracy", "accuracy_ci95", "macro_f1", "val_accuracy", "ece", "fit_time_s", "predict_time_s", "nc1",
            "cdnv", "shots_per_class",
            "target_rate", "known_rejected", "set_coverage", "set_size", "auroc_near", "fpr95_near",
            "unknown_rejected_near", "auroc_far", "fpr95_far", "unknown_rejected_far", "average_accuracy",
            "first_step_accuracy"]
OPEN_SET = [("known_rejected", "known rejected %"), ("target_rate", "target %"),
            ("set_coverage", "set coverage %"), ("auroc_near", "AUROC near %"),
            ("fpr95_near", "FPR95 near %"), ("auroc_far", "AUROC far %"), ("fpr95_far", "FPR95 far %"),
            ("unknown_rejected_near", "near rejected %"), ("unknown_rejected_far", "far rejected %")]


def load_results(out: str | Path) -> tuple[pd.DataFrame, dict]:
    """The finished cells of the grid in `out`, in manifest order, and its manifest (name, planned cells)."""
    from imprint.grid.runner import read_cell

    out = Path(out)
    manifest = read_manifest(out)
    entries = manifest["cells"]
    rows, runs, damaged = [], {}, set()
    for entry in entries:
        key = entry["key"]
        if key not in runs and key not in damaged and (out / "cells" / f"{key}.json").is_file():
            cell = read_cell(out, key)
            if cell is None:
                damaged.add(key)
            else:
                runs[key] = cell
        if key in runs:  # a run shared by capped variants is shown with each one's own settings
            requested = entry.get("requested") if isinstance(entry.get("requested"), dict) else {}
            rows.append({"variant": entry["variant"], **runs[key], **requested})
    if damaged:
        warnings.warn(f"{len(damaged)} cell file(s) in {out}/cells are damaged and left out of the report; rerun the "
                      "grid to compute them again", stacklevel=2)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["shots"] = frame["shots"].astype(str)
        frame["shots_per_class"] = frame["n_support"] / frame["n_classes"]
    return frame, manifest


def per_group(results: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds of every (group, variant): the paper's per-group figure."""
    measured = [c for c in MEASURED if c in results]
    settings = [c for c in results.columns if c not in GROUP + ["variant", "key", "seed", "n_support", "n_test"]
                + measured]
    frame = results.copy()
    frame[settings] = frame[settings].astype(object).where(frame[settings].notna(), None)
    medians = frame.groupby(GROUP + ["variant"], sort=False, dropna=False)[measured].median().reset_index()
    first = frame.groupby(GROUP + ["variant"], sort=False, dropna=False)[settings].first().reset_index()
    return medians.merge(first, on=GROUP + ["variant"])


def _pct(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.2f}"


def _number(value: float, digits: int = 3) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def _settings_table(results: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Each variant's stage settings as the paper names a configuration (``imprint.grid.expand.method_label``)."""
    from imprint.core.settings import SETTINGS
    from imprint.grid.expand import method_label

    labels = []
    for variant in variants:
        row = results[results["variant"] == variant].iloc[0]
        settings = {name: _as_declared(name, row[name]) for name in results.columns
                    if name in SETTINGS and pd.notna(row[name])}
        if "baseline" in results.columns and pd.notna(row.get("baseline")):
            labels.append("a trained baseline (no stages)")
            continue
        try:
            labels.append(method_label(settings))
        except Exception:  # a plug-in stage not imported here: show the words as they are
            labels.append(", ".join(f"{k}={v}" for k, v in settings.items()))
    return pd.DataFrame({"variant": variants, "stages": labels})


def _as_declared(name: str, value: object) -> object:
    """A setting read back from a table as its declaration takes it: a whole number that pandas turned into a float
    (a column with gaps: k=2.0) is an integer again where the setting takes integers."""
    from imprint.core.settings import SETTINGS

    if isinstance(value, float) and value.is_integer():
        try:
            SETTINGS[name].check(int(value))
            return int(value)
        except ValueError:
            pass
    return value


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _open_set_table(compared: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    means = compared.groupby("variant", sort=False)[[c for c, _ in OPEN_SET if c in compared]].mean()
    rows = {"variant": variants}
    for column, title in OPEN_SET:
        if column in means:
            rows[title] = [_pct(means.loc[v, column]) if v in means.index else "n/a" for v in variants]
    return pd.DataFrame(rows)


def _span(counts: pd.Series, noun: str) -> str:
    low, high = int(counts.min()), int(counts.max())
    return f"{low} {noun}{'s' if low != 1 else ''}" if low == high else f"{low} to {high} {noun}s"


def summarize(results: pd.DataFrame, groups: pd.DataFrame, planned: int, name: str) -> tuple[str, dict]:
    """summary.md text from the results and their `per_group` medians, and what the figures need
    (variant names, ranks, cliques). Variants are compared only over the groups where every one of them ran."""
    variants = list(dict.fromkeys(groups["variant"]))
    table = groups.pivot_table(index=GROUP, columns="variant", values="accuracy", sort=False, dropna=False)
    table = table.reindex(columns=variants)
    complete = table.dropna()
    scores = complete.to_numpy()
    ranks = average_ranks(scores) if len(complete) else np.full(len(variants), np.nan)
    comparison: Comparison | None = compare(scores) if len(complete) else None
    in_complete = groups.set_index(GROUP).index.isin(complete.index)
    compared = groups[in_complete]
    seeds = results.groupby(GROUP + ["variant"]).size()
    missing = len(table) - len(complete)
    lines = [f"# Grid report: {name}", "",
             f"{len(results)} of {planned} cells finished: {len(table)} groups (encoder x dataset x task x shots), "
             f"{len(variants)} variants, {_span(seeds, 'seed')} per group and variant (median over seeds). "
             f"Variants are compared over the {len(complete)} group(s) where every variant ran"
             + (f"; {missing} group(s) lack a variant and are left out of the comparison." if missing else ".")
             + " Accuracy on held-out test images; nothing is tuned on them.", "",
             "## Variants (sorted by average rank over the compared groups; 1 = best)", ""]
    timing = groups.groupby("variant", sort=False)[["fit_time_s", "predict_time_s"]].median()
    rows = pd.DataFrame({
        "variant": variants,
        "mean accuracy %": [_pct(complete[v].mean()) if len(complete) else "n/a" for v in variants],
        "average rank": [_number(r, 2) for r in ranks],
        "mean macro-F1 %": [_pct(compared.loc[compared["variant"] == v, "macro_f1"].mean()) for v in variants],
        **({"mean ECE": [_number(compared.loc[compared["variant"] == v, "ece"].mean(), 3) for v in variants]}
           if "ece" in compared else {}),
        "fit ms (median)": [_number(1000 * timing.loc[v, "fit_time_s"], 1) for v in variants],
        "predict ms (median)": [_number(1000 * timing.loc[v, "predict_time_s"], 1) for v in variants],
    }).iloc[np.argsort(np.nan_to_num(ranks, nan=np.inf), kind="stable")]
    lines += [_markdown(rows), ""]
    if comparison is None:
        lines.append(f"No Friedman test or critical-difference diagram: they need >= {MIN_GROUPS} compared groups "
                     f"and >= 3 variants (have {len(complete)} and {len(variants)}).")
    else:
        lines.append(f"Friedman test over {len(complete)} groups and {len(variants)} variants: "
                     f"chi2 = {comparison.friedman_statistic:.2f}, p = {comparison.friedman_p:.3g}"
                     + (": the variants' differences are **not significant** (p > 0.05), so their order above may "
                        "be chance. " if comparison.friedman_p > 0.05 else ". ")
                     + "Critical-difference diagram: cd_diagram.png (pairwise Wilcoxon signed-rank tests, "
                     "Holm-corrected, alpha 0.05).")
    if "ece" in compared:
        lines += ["", "Mean ECE: expected calibration error of predict_proba on the test images (15 confidence "
                  "bins; 0 = probabilities that mean what they say)."]
    lines += ["", "## Legend", "", "A variant named by its stages reads NORM_pre / GEN (its settings) / NORM_post / "
              "NORM_inf / AGG, then the metric (head) where it is not the inner product, then the rejection score; "
              "each named variant's settings:", "", _markdown(_settings_table(results, variants))]
    if "average_accuracy" in groups:
        means = compared.groupby("variant", sort=False)[["accuracy", "average_accuracy"]].mean()
        table_ = pd.DataFrame({"variant": variants,
                               "last-step accuracy %": [_pct(means.loc[v, "accuracy"]) for v in variants],
                               "average accuracy over steps %": [_pct(means.loc[v, "average_accuracy"])
                                                                 for v in variants]})
        lines += ["", "## Class-incremental (mean over the compared groups)", "", _markdown(table_), "",
                  "Classes arrive in the steps the task names; after each step the classifier is scored on the test "
                  "images of every class seen so far."]
    if "known_rejected" in groups:
        lines += ["", "## Open set (mean over the compared groups; rejection at the conformal threshold set on the "
                  "support set alone)", "", _markdown(_open_set_table(compared, variants)), "",
                  "known rejected: share of known-class test images called unknown, against the target rate; set "
                  "coverage: share of known-class test images whose conformal label set (at alpha = the target "
                  "rate) holds their class; near: "
                  "the dataset's other classes; far: the other datasets' test images; FPR95: unknown images "
                  "accepted when 95% of known ones are."]
    collapse = groups.groupby(GROUP, sort=False)[["nc1", "cdnv"]].median()
    wide = table.map(_pct).join(collapse.map(_number)).reset_index()
    lines += ["", "## Per group: accuracy % (median over seeds), NC1 and CDNV of the L2-normalised support set "
              "(n/a: a class has one support image, so there is no spread to measure)",
              "", _markdown(wide[GROUP + ["nc1", "cdnv"] + variants]), ""]
    figures = {"variants": variants, "ranks": ranks,
               "cliques": comparison.cliques(ranks) if comparison is not None else None}
    return "\n".join(lines), figures
