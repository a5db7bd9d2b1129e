"""Which faces are one person, from their embeddings alone: average-linkage clustering cut at
dlib's same-person distance. Curation clusters the unknown captures with it so a reviewer
names a person once; training groups the faces reviewed as strangers with it, so that one
stranger captured on many days counts as one person in the estimate, not as many.
"""

from __future__ import annotations

import numpy as np

# Two groups merge while their mean pairwise distance is below this. On lfw_dev's 1,000
# strangers (one photo of each) it made 964 groups; on its 2,409 photos of 452 people, 654
# groups, 7 of them mixing two people: it splits a person more often than it merges two.
SAME_PERSON_DISTANCE = 0.5


def agglomerate(X: np.ndarray, threshold: float = SAME_PERSON_DISTANCE) -> np.ndarray:
    """Group labels (0..k-1, in order of first appearance) from average-linkage clustering cut
    at ``threshold``: two groups merge while their mean pairwise distance is below it."""
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    from sklearn.cluster import AgglomerativeClustering

    raw = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold, linkage="average", metric="euclidean"
    ).fit_predict(np.asarray(X, dtype=np.float64))
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(r), len(order)) for r in raw], dtype=np.int64)
