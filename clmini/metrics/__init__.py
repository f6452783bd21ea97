"""What a representation is worth: kNN and linear-probe accuracy, and the geometry the papers measure.

- :mod:`~clmini.metrics.features`: encoder features ``h`` and projections ``z`` of a network;
- :mod:`~clmini.metrics.knn`: weighted kNN on cosine similarity (Wu et al. 2018; k = 200, t = 0.1
  as in the SimCLR/DySTreSS evaluations), at one ``k`` or many;
- :mod:`~clmini.metrics.probe`: L2-regularised softmax regression (L-BFGS) on frozen features;
- :mod:`~clmini.metrics.geometry`: uniformity (Wang & Isola, reported as ``-L_unif`` like Wang &
  Liu), alignment, tolerance (Wang & Liu eq. 11), class separation (SINCERE), class centroids,
  histograms of positive/negative pair similarities.

Large pairwise computations run in row chunks so memory stays ``O(chunk * N)``. This layer knows
tensors and networks, not runs: the engine's evaluation (:mod:`clmini.engine.evaluation`) and its
per-epoch monitors call it.
"""
from clmini.metrics.features import autocast, encode
from clmini.metrics.geometry import (alignment, centroid_concentration, centroid_similarity, class_centroids,
                                     class_separation, embedding_separation, mean_pair_similarity,
                                     similarity_histograms, tolerance, uniformity)
from clmini.metrics.knn import knn_accuracies, knn_accuracy
from clmini.metrics.probe import linear_probe

__all__ = ["autocast", "encode", "knn_accuracy", "knn_accuracies", "linear_probe", "uniformity", "alignment",
           "tolerance", "class_separation", "embedding_separation", "mean_pair_similarity",
           "similarity_histograms", "class_centroids", "centroid_similarity", "centroid_concentration"]
