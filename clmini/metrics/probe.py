"""The linear probe: a convex, untuned classifier on frozen features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.metrics.features import check_rows


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, max_iter: int = 300, weight_decay: float = 1e-4) -> float:
    """Test accuracy of a linear classifier (L2-regularised softmax regression) on frozen features.

    Features are standardised with the training statistics and the convex objective
    ``mean cross-entropy + weight_decay / 2 * ||W||^2`` is minimised full-batch by L-BFGS from
    zero weights: no learning rate, batch order or initialisation to tune or to get lucky with.
    Nothing is tuned on the test set.
    """
    check_rows(train_features, train_labels, "train_features")
    check_rows(test_features, test_labels, "test_features")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    mean, std = train_features.float().mean(0), train_features.float().std(0).clamp(min=1e-6)
    x_train = (train_features.float() - mean) / std
    x_test = (test_features.float() - mean) / std
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = nn.Linear(x_train.shape[1], n_classes).to(x_train.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe(x_train), train_labels) + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        return float((probe(x_test).argmax(1) == test_labels).float().mean())
