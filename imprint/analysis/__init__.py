"""Looking at data rather than classifying it: neural-collapse measures of a set of embeddings (``collapse``) and
the inspection of a support set for wrong labels, copies, outliers and what to label next (``inspection``)."""
