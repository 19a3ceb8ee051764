"""Neural-collapse diagnostics: why a variant wins, which k and which backbone to choose."""
from imprint.analysis.collapse.metrics import (
    CollapseStats,
    cdnv,
    collapse_report,
    margin_1vr,
    min_pairwise_distance,
    nc1,
    nc1_quotient,
    nc2_equiangularity,
    nc2_equinorm,
    nc3,
    nc4,
    vci,
    welch_bound,
)

__all__ = ["CollapseStats", "cdnv", "collapse_report", "margin_1vr", "min_pairwise_distance", "nc1",
           "nc1_quotient", "nc2_equiangularity", "nc2_equinorm", "nc3", "nc4", "vci", "welch_bound"]
