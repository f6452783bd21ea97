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
    # One parameter [C, D + 1] (weights, then the bias) and the gradient written out
    # (:func:`softmax_regression`), so that each L-BFGS evaluation is two small matmuls.
    params = torch.zeros(n_classes, x_train.shape[1] + 1, device=x_train.device)
    x_train_1 = torch.cat([x_train, torch.ones(len(x_train), 1, device=x_train.device)], dim=1)  # [n, D + 1]
    onehot = F.one_hot(train_labels, n_classes).to(x_train.dtype)                                 # [n, C]
    optimizer = torch.optim.LBFGS([params], lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        loss, params.grad = softmax_regression(params, x_train_1, onehot, weight_decay)
        return loss

    optimizer.step(objective)
    logits = x_test @ params[:, :-1].T + params[:, -1]                                             # [m, C]
    return float((logits.argmax(1) == test_labels).float().mean())


@torch.no_grad()
def softmax_regression(params: Tensor, x: Tensor, onehot: Tensor, weight_decay: float) -> tuple[Tensor, Tensor]:
    """``mean cross-entropy + weight_decay / 2 * ||W||^2`` and its gradient, written out.

    ``params`` ``[C, D + 1]``: the weights ``W`` and, last, the bias (not regularised); ``x``
    ``[n, D + 1]``: features with a column of ones; ``onehot`` ``[n, C]``. The gradient of the mean
    cross-entropy is ``(softmax - onehot)^T x / n``.
    """
    log_p = (x @ params.T).log_softmax(dim=1)                                     # [n, C]
    weights = torch.cat([params[:, :-1], torch.zeros_like(params[:, -1:])], dim=1)  # the bias is not decayed
    loss = -(log_p * onehot).sum() / len(x) + 0.5 * weight_decay * weights.pow(2).sum()
    grad = (log_p.exp() - onehot).T @ x / len(x) + weight_decay * weights          # [C, D + 1]
    return loss, grad
