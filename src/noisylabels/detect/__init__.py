"""Find the wrong labels in a data set from predicted probabilities (confident learning).

Functional and array-based, with the argument names and meanings of cleanlab 2.x's
``filter`` / ``rank`` / ``count`` modules (and the same numbers on the same inputs; cleanlab
itself is an optional extra used only by the tests):

* :func:`label_quality_scores` -- a score per sample, lower = more likely mislabeled;
* :func:`find_label_issues` -- a boolean mask, or flagged indices ranked by severity;
* :func:`estimate_noise` -- confident learning's joint of given and true labels, noise
  matrices, the noise rate and the number of wrong labels (Northcutt et al. 2021);
* :mod:`~noisylabels.detect.inputs` -- reading a finished run or a user's labels and probabilities;
* :mod:`~noisylabels.detect.report` -- detection on those inputs, and the table, summary and plot
  ``noisylabels detect`` writes;
* :func:`~noisylabels.detect.export.export_labels` -- the cleaned ``path,label`` CSV
  (``noisylabels export``);
* :func:`resolve_forget_rate` -- Co-teaching's ``forget_rate: estimate`` from a cross-fitted
  warm-up (:func:`estimate_forget_rate`), the ``resolve`` hook of :func:`noisylabels.train.fit`.

Give these functions out-of-sample (cross-fitted) probabilities: ``noisylabels train
--folds K`` or :func:`noisylabels.detect.crossfit.crossfit` make them.
"""

from __future__ import annotations

from .count import (ESTIMATION_METHODS, NoiseEstimate, calibrate_confident_joint, compute_confident_joint,
                    estimate_joint, estimate_latent, estimate_noise, num_label_issues)
from .filter import FILTER_METHODS, find_label_issues, find_predicted_neq_given
from .forget_rate import estimate_forget_rate, resolve_forget_rate
from .rank import SCORE_METHODS, confident_thresholds, label_quality_scores, order_label_issues

__all__ = ["label_quality_scores", "order_label_issues", "confident_thresholds", "find_label_issues",
           "find_predicted_neq_given", "compute_confident_joint", "calibrate_confident_joint", "estimate_joint",
           "estimate_latent", "estimate_noise", "num_label_issues", "NoiseEstimate", "SCORE_METHODS",
           "FILTER_METHODS", "ESTIMATION_METHODS", "estimate_forget_rate", "resolve_forget_rate"]
