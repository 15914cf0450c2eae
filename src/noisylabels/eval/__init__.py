"""Metrics, plots and reports."""

from .metrics import (accuracy, detection_auroc, detection_average_precision, detection_metrics,
                      label_recovery)

__all__ = ["accuracy", "detection_auroc", "detection_average_precision", "detection_metrics", "label_recovery"]
