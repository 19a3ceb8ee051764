"""PNG figures of a grid: accuracy vs k, accuracy vs shots, and the critical-difference diagram."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from imprint.atomic import atomic_write_bytes
from imprint.pictures import png_bytes

FAMILY = ["norm_pre", "generation", "norm_post", "norm_inf", "aggregation", "m", "metric"]  # what a k-curve shares


def _save(figure: plt.Figure, path: Path) -> Path:
    atomic_write_bytes(path, png_bytes(figure, dpi=120, bbox_inches="tight"))
    return path


def _family_label(row: pd.Series) -> str:
    agg = f"{int(row['m'])}-nn" if row["aggregation"] == "mnn" else row["aggregation"]
    return f"{row['norm_pre']}/{row['generation']}/{row['norm_post']}/{row['norm_inf']}/{agg}"


def accuracy_vs_k(per_group: pd.DataFrame, path: Path) -> Path | None:
    """Mean accuracy against k, one line per variant family with >= 2 values of k, over the groups where the
    family ran every k uncapped (k capped at few shots would flatten the curve); k="auto" is drawn as a dashed
    level over the same groups."""
    if "k" not in per_group:
        return None
    rows = per_group.dropna(subset=["k"]).copy()
    if "k_used" in rows:
        rows = rows[(rows["k"] == "auto") | (rows["k_used"].astype(str) == rows["k"].astype(str))]
    columns = [c for c in FAMILY if c in rows]
    rows[columns] = rows[columns].fillna("")
    lines, levels, used = {}, {}, {}
    total = len(per_group.groupby(["encoder", "dataset", "task", "shots"]))
    for _, family in rows.groupby(columns, dropna=False):
        table = family.pivot_table(index=["encoder", "dataset", "task", "shots"], columns="k", values="accuracy")
        present = table.notna().sum(axis=1)
        table = table[present == present.max()].dropna(axis=1)
        auto = table.pop("auto") if "auto" in table else None
        if table.shape[1] >= 2:
            label = _family_label(family.iloc[0])
            lines[label] = table.mean().rename(index=float).sort_index()
            used[label] = len(table)
            if auto is not None:
                levels[label] = auto.mean()
    if not lines:
        return None
    subset = {n for n in used.values() if n < total}
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, curve in lines.items():
        drawn = axes.plot(curve.index, 100 * curve.values, marker="o", label=label)[0]
        if label in levels:
            axes.axhline(100 * levels[label], ls="--", color=drawn.get_color(), label=f"{label}, k=auto")
    note = (f"\nover {', '.join(map(str, sorted(subset)))} of the {total} groups: those where every k ran "
            "uncapped (k above the shots is capped)") if subset else ""
    axes.set(xscale="log", xlabel="k (proxies per class)", ylabel="mean accuracy over groups (%)",
             title=f"Accuracy vs k{note}")
    axes.title.set_fontsize(9)
    ks = sorted({k for curve in lines.values() for k in curve.index})
    axes.set_xticks(ks, [f"{k:g}" for k in ks])
    axes.minorticks_off()
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def accuracy_vs_shots(per_group: pd.DataFrame, path: Path) -> Path | None:
    """Mean accuracy against support images per class, one line per variant, when shots vary."""
    if per_group["shots_per_class"].nunique() < 2:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    for variant, rows in per_group.groupby("variant", sort=False):
        curve = rows.groupby("shots_per_class")["accuracy"].mean()
        axes.plot(curve.index, 100 * curve.values, marker="o", label=variant)
    axes.set(xscale="log", xlabel="support images per class", ylabel="mean accuracy over groups (%)",
             title="Accuracy vs shots")
    shots = sorted(per_group["shots_per_class"].unique())
    axes.set_xticks(shots, [f"{s:g}" for s in shots])
    axes.minorticks_off()
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _save(figure, path)


def cd_diagram(names: list[str], ranks: np.ndarray, cliques: list[list[int]], path: Path) -> Path:
    """Variants on an average-rank axis (best at the left); bars join variants with no significant difference."""
    order = np.argsort(ranks)
    n = len(names)
    half = (n + 1) // 2
    height = 1.2 + 0.3 * half + 0.2 * len(cliques)
    figure, axes = plt.subplots(figsize=(8, height))
    low, high = 1, max(n, int(np.ceil(ranks.max())))
    axes.set_xlim(low - 0.5, high + 0.5)
    axes.set_ylim(-(half + 1) * 0.3 - 0.2 * len(cliques), 0.5)
    axes.hlines(0, low, high, color="black")
    for r in range(low, high + 1):
        axes.vlines(r, 0, 0.1, color="black")
        axes.text(r, 0.18, str(r), ha="center", fontsize=8)
    for position, index in enumerate(order):
        left = position < half
        level = -(position if left else n - 1 - position) * 0.3 - 0.45
        x_text = low - 0.4 if left else high + 0.4
        axes.plot([ranks[index], ranks[index], x_text], [0, level, level], color="black", lw=0.8)
        axes.text(x_text, level, f"{names[index]} ({ranks[index]:.2f})", ha="right" if left else "left",
                  va="center", fontsize=8)
    for depth, clique in enumerate(cliques):
        y = -0.12 - 0.08 * depth
        axes.hlines(y, ranks[clique].min() - 0.03, ranks[clique].max() + 0.03, color="tab:red", lw=3)
    axes.axis("off")
    axes.set_title("Average rank (1 = best); red bars: no significant difference "
                   "(Wilcoxon, Holm, alpha 0.05)", fontsize=8)
    return _save(figure, path)
