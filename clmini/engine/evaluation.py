"""The final evaluation of a run: accuracy of the features, geometry of the projections."""
from __future__ import annotations

import torch
from torch import nn

from clmini.engine.augment import AugmentConfig, augment
from clmini.engine.data import stratified_indices
from clmini.losses import two_views
from clmini.metrics import (alignment, autocast, class_separation, encode, knn_accuracy, linear_probe,
                            mean_pair_similarity, similarity_histograms, tolerance, uniformity)


def evaluate_representation(model: nn.Module, data, knn_k: int = 200, eval_train_size: int | None = None,
                            probe_iters: int = 300, augment_config=None, n_pairs: int = 2000,
                            precision: str = "fp32") -> dict:
    """The final evaluation of a network on an :class:`~clmini.engine.data.ImageData`.

    Encoder features ``h`` give kNN and linear-probe accuracy (bank/probe training set: the train
    split, or a stratified subset of ``eval_train_size`` images; queries: the whole test split).
    Normalised projections ``z`` of the test split give uniformity, tolerance and separation; two
    augmented views of ``n_pairs`` test images give alignment, the mean positive/negative
    similarity and the histograms. Subsets and views use fixed seeds, so every run (and the
    random-init baseline) is measured on the same images. The network runs in ``precision``.
    """
    whole = eval_train_size is None or eval_train_size >= data.train_y.numel()
    bank = data if whole else data.subset(n_train=eval_train_size, seed=0)
    train_h, train_z = encode(model, bank.train_x, precision=precision)
    test_h, test_z = encode(model, data.test_x, precision=precision)
    # The same images as data.subset(n_test=n_pairs, seed=0), whose test split is drawn with seed 1.
    pick = stratified_indices(data.test_y, min(n_pairs, data.test_y.numel()), seed=1).to(data.device)
    generator = torch.Generator().manual_seed(0)
    config = augment_config or AugmentConfig()
    views = [augment(data.test_x[pick], generator, config) for _ in range(2)]
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast(data.device, precision):
        z1, z2 = (model(v).float() for v in views)
    model.train(was_training)
    z, ids = two_views(z1, z2)
    positive, negative = mean_pair_similarity(z, ids)
    return {
        "knn_acc": knn_accuracy(train_h, bank.train_y, test_h, data.test_y, k=min(knn_k, len(bank.train_y))),
        "knn_k": min(knn_k, len(bank.train_y)),
        "linear_probe_acc": linear_probe(train_h, bank.train_y, test_h, data.test_y, max_iter=probe_iters),
        "uniformity": uniformity(test_z),
        "tolerance": tolerance(test_z, data.test_y),
        "alignment": alignment(z1, z2),
        **class_separation(train_z, bank.train_y, test_z, data.test_y),
        "pos_sim": positive,
        "neg_sim": negative,
        "histograms": {"views": similarity_histograms(z, ids),
                       "classes": similarity_histograms(test_z[pick], data.test_y[pick])},
        "eval_train_size": len(bank.train_y),
        "eval_test_size": len(data.test_y),
    }
