"""A saved classifier together with the encoder it was fitted with, loaded so that what a file says never makes
imprint download weights or read a checkpoint on its own: only packaged encoders are built from the id a file
records; any other must be named by the caller."""
from __future__ import annotations

import os
from typing import Any

from imprint.core.errors import UserError, printable
from imprint.workflows.embedder import Embedder, EmbedOptions


class EncoderChoiceError(UserError):
    """An encoder that does not match the classifier, or that a file alone may not make imprint build."""


def open_classifier(path: str | os.PathLike | Any, options: EmbedOptions | None = None) -> tuple[Any, Embedder]:
    """(classifier, embedder with its encoder) for a classifier file (or a fitted classifier). `options.encoder`
    names the encoder where the classifier records none, or one the file alone may not make imprint build."""
    from imprint.encoders.factory import ALIASES, self_contained
    from imprint.estimator.classifier import ImprintClassifier

    options = options or EmbedOptions()
    if isinstance(path, ImprintClassifier):
        clf, shown = path, "the classifier"
    else:
        clf, shown = ImprintClassifier.load(path, device=options.device), printable(path)
    recorded, wanted = clf.encoder_id_, options.encoder
    if recorded is None and not wanted:
        raise EncoderChoiceError(f"{shown} does not record its encoder; name the one it was fitted with (encoder= "
                                 "in Python, --encoder on the command line)")
    if wanted and recorded:
        if ALIASES.get(wanted, wanted) != recorded:
            raise EncoderChoiceError(f"{shown} was fitted with {printable(recorded)}, not {printable(wanted)}; name no "
                                     "encoder (encoder= in Python, --encoder on the command line) to use the "
                                     "recorded one")
    elif recorded and not self_contained(recorded):
        raise EncoderChoiceError(f"{shown} was fitted with {printable(recorded)}, which imprint does not build from "
                                 "what a file says (it would download weights or read a checkpoint): if you trust "
                                 f"it, name it: encoder={printable(recorded)!r} in Python, --encoder "
                                 f"{printable(recorded)} on the command line")
    embedder = Embedder(options, wanted or recorded)
    if embedder.encoder.embedding_dim != clf.n_features_in_:
        raise EncoderChoiceError(f"{embedder.encoder.id} gives {embedder.encoder.embedding_dim}-dimensional "
                                 f"embeddings but {shown} expects {clf.n_features_in_}")
    return clf, embedder
