"""Metrics, plots and reports."""

from .metrics import (accuracy, detection_auroc, detection_average_precision, detection_metrics,
                      label_recovery)
from .knn import knn_accuracy, knn_predict

__all__ = ["accuracy", "detection_auroc", "detection_average_precision", "detection_metrics", "label_recovery", "knn_predict",
           "knn_accuracy"]
