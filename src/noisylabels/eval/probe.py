"""The linear probe of self-supervised features: a multinomial logistic regression on frozen features.

The evaluation protocol of SimCLR (Chen et al. 2020, Sec. 2.3 and App. B.6: "a linear classifier
is trained on top of the frozen base network, and test accuracy is used as a proxy for
representation quality"), here fitted exactly rather than by SGD: the features are standardised
with the training set's mean and standard deviation, and the L2-regularised cross-entropy
``mean_i CE(W h_i + b, y_i) + l2 / 2 |W|^2`` is minimised with full-batch L-BFGS from zero (convex:
no seed, the same numbers on every run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


__all__ = ["linear_probe_accuracy"]


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                          test_labels: torch.Tensor, *, num_classes: int, l2: float = 1e-3,
                          max_iter: int = 200) -> float:
    """Test accuracy of a logistic regression fitted on frozen training features.

    Parameters
    ----------
    train_features, train_labels:
        ``(N, d)`` features and their int64 labels in ``[0, num_classes)``.
    test_features, test_labels:
        ``(M, d)`` features and labels to score.
    num_classes:
        ``K``.
    l2:
        Weight of ``l2 / 2 |W|^2`` (the bias is not penalised).
    max_iter:
        L-BFGS iterations (full batch, strong Wolfe line search).

    Returns
    -------
    float
        The fraction of test samples classified right.
    """
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"linear probe: features must be (N, d) and (M, d), got {tuple(train_features.shape)}, "
                        f"{tuple(test_features.shape)}")
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels) or not len(test_labels):
        raise ValueError("linear probe: every feature needs a label, and the test set samples")
    x = train_features.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    xt = (test_features.double() - mean) / std
    y = train_labels.long()
    w = torch.zeros(x.shape[1], int(num_classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(int(num_classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=int(max_iter), line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * float(l2) * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xt @ w + b).argmax(1) == test_labels.long()).double().mean())
