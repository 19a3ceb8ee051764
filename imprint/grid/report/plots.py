"""PNG figures of a grid: accuracy vs k, accuracy vs shots, and the critical-difference diagram."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from imprint.core.atomic import atomic_write_bytes
from imprint.io.png import png_bytes

FAMILY = ["norm_pre", "generation", "norm_post", "norm_inf", "aggregation", "m", "metric"]  # what a k-curve shares


def _save(figure: plt.Figure, path: Path) -> Path:
    atomic_write_bytes(path, png_bytes(figure, dpi=120, bbox_inches="tight"))
    return path


def _family_label(row: pd.Series) -> str:
    agg = f"{int(row['m'])}-nn" if row["aggregation"] == "mnn" else row["aggregation"]
    return f"{row['norm_pre']}/{row['generation']}/{row['norm_post']}/{row['norm_inf']}/{agg}"


SEEDS = ["encoder", "dataset", "task", "shots"]  # a group; curves are means over groups, per seed


def _over_seeds(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of `by`: the mean accuracy over groups (in %), and the half-width of its 95% confidence interval
    over seeds (Student's t; 0 with one seed)."""
    from scipy import stats

    per_seed = rows.groupby([by, "seed"])["accuracy"].mean().unstack("seed") * 100
    seeds = per_seed.notna().sum(axis=1)
    spread = per_seed.std(axis=1, ddof=1).fillna(0.0)
    half = stats.t.ppf(0.975, np.maximum(seeds - 1, 1)) * spread / np.sqrt(seeds)
    return pd.DataFrame({"mean": per_seed.mean(axis=1), "ci": np.where(seeds > 1, half, 0.0), "seeds": seeds})


def _honest_axis(axes: plt.Axes) -> None:
    """Accuracy from 0 to 100%: a difference looks as large as it is, never a point stretched over the axis."""
    axes.set_ylim(0, 100)
    axes.set_yticks(range(0, 101, 10))


def accuracy_vs_k(results: pd.DataFrame, path: Path) -> Path | None:
    """The accuracy-vs-k figure (``k_figure``) written to `path`, where there is one."""
    figure = k_figure(results)
    return None if figure is None else _save(figure, path)


def k_figure(results: pd.DataFrame) -> plt.Figure | None:
    """Mean accuracy against k with 95% confidence intervals over seeds, one line per variant family with >= 2
    values of k, over the groups where the family ran every k uncapped (k capped at few shots would flatten the
    curve); k="auto" is drawn as a dashed level over the same groups."""
    if "k" not in results:
        return None
    rows = results.dropna(subset=["k"]).copy()
    if "k_used" in rows:
        rows = rows[(rows["k"].astype(str) == "auto") | (rows["k_used"].astype(str) == rows["k"].astype(str))]
    columns = [c for c in FAMILY if c in rows]
    rows[columns] = rows[columns].fillna("")
    rows["k"] = rows["k"].astype(str)
    lines, levels, used = {}, {}, {}
    total = len(results.groupby(SEEDS))
    for _, family in rows.groupby(columns, dropna=False):
        table = family.pivot_table(index=SEEDS, columns="k", values="accuracy", aggfunc="median")
        present = table.notna().sum(axis=1)
        complete = table[present == present.max()].dropna(axis=1)
        ks = [k for k in complete.columns if k != "auto"]
        if len(ks) < 2:
            continue
        label = _family_label(family.iloc[0])
        kept = family.set_index(SEEDS).index.isin(complete.index)
        curve = _over_seeds(family[kept & family["k"].isin(ks).to_numpy()], "k")
        curve.index = curve.index.astype(float)
        lines[label] = curve.sort_index()
        used[label] = len(complete)
        if "auto" in complete.columns:
            levels[label] = _over_seeds(family[kept & (family["k"] == "auto").to_numpy()], "k")
    if not lines:
        return None
    subset = {n for n in used.values() if n < total}
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, curve in lines.items():
        drawn = axes.errorbar(curve.index, curve["mean"], yerr=curve["ci"], marker="o", capsize=3, label=label)
        if label in levels:
            level = levels[label].iloc[0]
            color = drawn.lines[0].get_color()
            axes.axhline(level["mean"], ls="--", color=color, label=f"{label}, k=auto")
            if level["ci"] > 0:
                axes.axhspan(level["mean"] - level["ci"], level["mean"] + level["ci"], color=color, alpha=0.12)
    note = (f"\nover {', '.join(map(str, sorted(subset)))} of the {total} groups: those where every k ran "
            "uncapped (k above the shots is capped)") if subset else ""
    seeds = int(max(curve["seeds"].max() for curve in lines.values()))
    axes.set(xscale="log", xlabel="k (proxies per class)", ylabel="mean accuracy over groups (%)",
             title=f"Accuracy vs k (bars: 95% CI over {seeds} seed{'s' if seeds > 1 else ''}){note}")
    _honest_axis(axes)
    axes.title.set_fontsize(9)
    ks = sorted({k for curve in lines.values() for k in curve.index})
    axes.set_xticks(ks, [f"{k:g}" for k in ks])
    axes.minorticks_off()
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return figure


def accuracy_vs_shots(results: pd.DataFrame, path: Path) -> Path | None:
    """The accuracy-vs-shots figure (``shots_figure``) written to `path`, where there is one."""
    figure = shots_figure(results)
    return None if figure is None else _save(figure, path)


def shots_figure(results: pd.DataFrame) -> plt.Figure | None:
    """Mean accuracy against support images per class with 95% confidence intervals over seeds, one line per
    variant, when shots vary."""
    if results["shots_per_class"].nunique() < 2:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    seeds = 1
    for variant, rows in results.groupby("variant", sort=False):
        curve = _over_seeds(rows, "shots_per_class")
        seeds = max(seeds, int(curve["seeds"].max()))
        axes.errorbar(curve.index, curve["mean"], yerr=curve["ci"], marker="o", capsize=3, label=variant)
    axes.set(xscale="log", xlabel="support images per class", ylabel="mean accuracy over groups (%)",
             title=f"Accuracy vs shots (bars: 95% CI over {seeds} seed{'s' if seeds > 1 else ''})")
    _honest_axis(axes)
    shots = sorted(results["shots_per_class"].unique())
    axes.set_xticks(shots, [f"{s:g}" for s in shots])
    axes.minorticks_off()
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return figure


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
