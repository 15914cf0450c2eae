"""A weighted k-nearest-neighbour classifier on features: the monitor of self-supervised training.

Wu, Xiong, Yu & Lin (2018), "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR), Sec. 3.4: a query's ``k`` most cosine-similar memory samples each vote for
their class with weight ``exp(s_i / tau)`` (``s_i`` the cosine similarity); the class with the
largest total wins. ``k = 200``, ``tau = 0.1`` there, and in the SimCLR / MoCo ports' CIFAR monitors.
It needs no trained classifier, which is why self-supervised runs report it as their accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


__all__ = ["knn_predict", "knn_accuracy"]


@torch.no_grad()
def knn_predict(memory: torch.Tensor, memory_labels: torch.Tensor, queries: torch.Tensor, *, num_classes: int,
                k: int = 200, temperature: float = 0.1, batch_size: int = 1024) -> torch.Tensor:
    """The weighted kNN class of each query (Wu et al. 2018, Sec. 3.4).

    Parameters
    ----------
    memory, memory_labels:
        ``(M, d)`` features with their int64 labels in ``[0, num_classes)``.
    queries:
        ``(Q, d)`` features to classify (normalised here, like the memory).
    k, temperature:
        Neighbours (at most ``M``) and ``tau`` of the weights ``exp(s / tau)``.

    Returns
    -------
    torch.Tensor
        ``(Q,)`` int64 predicted classes (ties: the lowest class).
    """
    if memory.ndim != 2 or queries.ndim != 2 or memory.shape[1] != queries.shape[1]:
        raise ValueError(f"knn: features must be (M, d) and (Q, d), got {tuple(memory.shape)}, {tuple(queries.shape)}")
    if len(memory) != len(memory_labels):
        raise ValueError(f"knn: {len(memory)} memory features but {len(memory_labels)} labels")
    if not float(temperature) > 0 or int(k) < 1:
        raise ValueError(f"knn: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    mem = F.normalize(memory.float(), dim=1)
    labels = memory_labels.to(mem.device).long()
    kk = min(int(k), len(mem))
    if kk < 1:
        raise ValueError("knn: the memory has no sample to vote")
    out = []
    for start in range(0, len(queries), int(batch_size)):
        q = F.normalize(queries[start:start + int(batch_size)].float().to(mem.device), dim=1)
        sim = q @ mem.T
        s, idx = sim.topk(kk, dim=1)
        w = torch.exp(s / float(temperature))
        votes = torch.zeros(len(q), int(num_classes), device=mem.device, dtype=w.dtype)
        votes.scatter_add_(1, labels[idx], w)
        out.append(votes.argmax(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def knn_accuracy(memory: torch.Tensor, memory_labels: torch.Tensor, queries: torch.Tensor,
                 query_labels: torch.Tensor, **kw) -> float:
    """Accuracy of :func:`knn_predict` against ``query_labels`` (NaN without queries)."""
    if len(queries) == 0:
        return float("nan")
    pred = knn_predict(memory, memory_labels, queries, **kw)
    return float((pred.cpu() == query_labels.cpu().long()).float().mean())
