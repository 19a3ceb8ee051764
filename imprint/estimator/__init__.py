"""The estimator: ``ImprintClassifier`` (the scikit-learn face) and the components it holds, each owning its
state and its part of the classifier file: the pipeline, the tuning of "auto" settings, the calibration of
probabilities, the open set, zero-shot text, the examples it was taught and what it was fitted on."""
