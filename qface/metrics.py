"""Standard metrics of the face-analysis benchmarks, on numpy arrays, each small enough to check by hand."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(true)))


def mean_class_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Average of per-class recalls over the classes present in `true` (robust to class imbalance)."""
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean([np.mean(pred[true == c] == c) for c in np.unique(true)]))


def f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Binary F1 of one label; 0 when there are neither true nor predicted positives' overlaps."""
    pred, true = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp = np.sum(pred & true)
    denominator = 2 * tp + np.sum(pred & ~true) + np.sum(~pred & true)
    return float(2 * tp / denominator) if denominator else 0.0


def mean_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over labels (columns) of the per-label F1, the usual AU-occurrence score."""
    return float(np.mean([f1(pred[:, j], true[:, j]) for j in range(np.asarray(true).shape[1])]))


def mean_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over labels (columns) of the per-label accuracy, the usual CelebA attribute score."""
    return float(np.mean(np.asarray(pred).astype(bool) == np.asarray(true).astype(bool)))


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def cumulative_score(pred: np.ndarray, true: np.ndarray, years: float = 5.0) -> float:
    """CS(θ): the share of faces whose age error is at most θ years."""
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float)) <= years))


def nme(pred: np.ndarray, true: np.ndarray) -> float:
    """68-point NME normalised by the inter-ocular distance (outer eye corners 36 and 45), per face then mean."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    inter_ocular = np.linalg.norm(true[:, 36] - true[:, 45], axis=-1)
    return float(np.mean(np.linalg.norm(pred - true, axis=-1).mean(-1) / inter_ocular))


def verification_accuracy(embeddings: np.ndarray, identities: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    """LFW-style 10-fold verification: balanced same/different pairs (at most 3,000 each), the distance threshold
    chosen on nine folds and scored on the tenth, accuracy averaged over folds."""
    rng = np.random.default_rng(seed)
    identities = np.asarray(identities)
    groups = [np.flatnonzero(identities == identity) for identity in np.unique(identities)]
    same = np.array([(a, b) for g in groups for k, a in enumerate(g) for b in g[k + 1 :]], dtype=np.int64)
    candidates = rng.integers(len(identities), size=(8 * max(len(same), 1), 2))
    different = candidates[identities[candidates[:, 0]] != identities[candidates[:, 1]]]
    count = min(len(same), len(different), 3000)
    if count < 2 * folds:  # too few same-person pairs for a 10-fold estimate
        return float("nan")
    pairs = np.r_[same[rng.choice(len(same), count, replace=False)], different[:count]]
    truth = np.r_[np.ones(count, bool), np.zeros(count, bool)]
    distances = np.linalg.norm(embeddings[pairs[:, 0]] - embeddings[pairs[:, 1]], axis=1)
    fold_of = rng.permutation(len(pairs)) % folds
    scores = []
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        candidates = np.quantile(distances[train], np.linspace(0, 1, 401))
        accuracy_at = [np.mean((distances[train] <= t) == truth[train]) for t in candidates]
        threshold = candidates[int(np.argmax(accuracy_at))]
        scores.append(np.mean((distances[test] <= threshold) == truth[test]))
    return float(np.mean(scores))
