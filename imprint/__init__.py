"""imprint: training-free transfer learning by weight imprinting (the IMPRINT framework)."""
from imprint.classifier import ImprintClassifier
from imprint.model import ImprintedModel
from imprint.persistence import ClassifierFileError
from imprint.registry import UnknownStageError

__version__ = "0.1.0"
__all__ = ["ClassifierFileError", "ImprintClassifier", "ImprintedModel", "UnknownStageError", "__version__"]
