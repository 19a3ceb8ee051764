"""The pluggable pipeline stages, each registered by name with the settings it declares."""
from imprint.stages.aggregation import AGGREGATIONS, make_aggregation
from imprint.stages.generation import GENERATORS, KMEANS_BACKENDS, generate, generation_options
from imprint.stages.metric import METRICS, make_metric, restore_metric
from imprint.stages.norm import NORMS, make_norm, norm_parts, norm_states, restore_norm

__all__ = ["AGGREGATIONS", "GENERATORS", "KMEANS_BACKENDS", "METRICS", "NORMS", "generate", "generation_options",
           "make_aggregation", "make_metric", "make_norm", "norm_parts", "norm_states", "restore_metric",
           "restore_norm"]
