"""The pluggable IMPRINT stages, each registered by name."""
from imprint.stages.aggregation import AGGREGATIONS, make_aggregation
from imprint.stages.generation import GENERATORS, KMEANS_BACKENDS, GenerationOptions, generate
from imprint.stages.metric import METRICS
from imprint.stages.norm import NORMS, make_norm

__all__ = ["AGGREGATIONS", "GENERATORS", "KMEANS_BACKENDS", "METRICS", "NORMS", "GenerationOptions",
           "generate", "make_aggregation", "make_norm"]
