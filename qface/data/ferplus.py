"""FER+ crowd votes for FER2013: ten annotators per face over 8 emotions (contempt included), unknown and not-a-face.

FER2013's own labels have no contempt class, so a model trained on them never learns when a face is *not*
contemptuous; FER+'s votes give every face a distribution over all 8 classes, contempt's real negatives included.
`../shared/data/fer2013/ferplus_votes.csv` carries the votes joined to every row of our FER2013 copy (column `row` =
the adapter's `source`).

Per face (written beside the chips as `ferplus.npz`, merged into the training and evaluation split by
qface/train/data.py):
    expression_soft       (N, 8) float32  the vote distribution over tasks.EXPRESSIONS (votes / emotion votes)
    expression_soft_mask  (N, 8) bool     all True where the face is usable, all False where it is not: most votes
                                          say unknown or not-a-face, or no emotion got a vote
    ferplus_majority      (N,) int64      FER+'s majority label, -1 where there is none. FER+'s "majority" protocol:
                                          single votes are dropped as outliers, then a class needs more than half
                                          of the remaining votes (unknown and not-a-face count) and must be an
                                          emotion; only faces with a majority label are scored
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from qface.tasks import EXPRESSIONS

FERPLUS_FILE = "ferplus.npz"
FERPLUS_COLUMNS = {  # FER+ column → our class name
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}
NON_EMOTIONS = ("unknown", "NF")


def read_votes(path: str | Path) -> dict[int, np.ndarray]:
    """row → (10,) votes: the 8 emotions in tasks.EXPRESSIONS order, then unknown and not-a-face. Rows of
    duplicated pictures may sum to 9-13 votes (the mean of their copies' votes), hence distributions, not counts."""
    order = [next(c for c, ours in FERPLUS_COLUMNS.items() if ours == name) for name in EXPRESSIONS]
    with open(path, newline="", encoding="utf-8") as stream:
        return {
            int(row["row"]): np.array([float(row[c]) for c in (*order, *NON_EMOTIONS)], np.float32)
            for row in csv.DictReader(stream)
            if row["match"] != "none"  # FER+ dropped the image: no votes
        }


def vote_labels(votes: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 10) votes → the arrays of `ferplus.npz` (see the module docstring)."""
    emotions = votes[:, : len(EXPRESSIONS)]
    emotion_votes = emotions.sum(1)
    usable = (emotion_votes > 0) & (emotion_votes >= votes[:, len(EXPRESSIONS) :].sum(1))
    kept = np.where(votes > 1, votes, 0.0)  # FER+'s reference protocol drops single votes as outliers first
    top = kept.argmax(1)
    has_majority = (top < len(EXPRESSIONS)) & (kept.max(1) > 0.5 * kept.sum(1))
    return {
        "expression_soft": (emotions / np.maximum(emotion_votes, 1)[:, None]).astype(np.float32),
        "expression_soft_mask": np.repeat(usable[:, None], len(EXPRESSIONS), axis=1),
        "ferplus_majority": np.where(has_majority, top, -1).astype(np.int64),
    }


def build_ferplus_labels(chips_folder: str | Path, votes_csv: str | Path) -> Path:
    """Writes `ferplus.npz` for a FER2013 chip cache; rows without votes are unusable (mask False)."""
    folder = Path(chips_folder)
    sources = np.load(folder / "labels.npz")["source"].astype(np.int64)
    by_row = read_votes(votes_csv)
    votes = np.stack([by_row.get(int(row), np.zeros(len(EXPRESSIONS) + 2, np.float32)) for row in sources])
    out = folder / FERPLUS_FILE
    np.savez(out.with_suffix(".tmp.npz"), **vote_labels(votes), votes=votes, source=sources)
    out.with_suffix(".tmp.npz").replace(out)
    return out
