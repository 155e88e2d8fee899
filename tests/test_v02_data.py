"""The data behind qface-dlib@0.2.0: FER+ votes as label distributions, 300-W's human landmarks, and a loss that
learns distributions (so contempt is learned from real negatives)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from qface.data.datasets import W300, read_pts, w300_split
from qface.data.ferplus import read_votes, vote_labels
from qface.tasks import EXPRESSIONS, expression_loss

NEUTRAL, HAPPY, CONTEMPT = (EXPRESSIONS.index(name) for name in ("neutral", "happy", "contempt"))


def votes(**counts: float) -> np.ndarray:
    """(10,) votes: EXPRESSIONS order, then unknown and NF."""
    order = (*EXPRESSIONS, "unknown", "NF")
    return np.array([counts.get(name, 0.0) for name in order], np.float32)


def test_vote_distributions_and_ferplus_majority_protocol():
    table = np.stack(
        [
            votes(neutral=6, happy=3, contempt=1),  # majority neutral (the single contempt vote is an outlier)
            votes(neutral=4, sad=4, anger=2),  # no class has more than half: no majority, still a distribution
            votes(unknown=7, happy=3),  # mostly unknown: unusable, no majority
            votes(),  # no votes (FER+ dropped the image)
            votes(neutral=5, contempt=1, happy=1, fear=1, sad=1, anger=1),  # 5 of 5 kept votes after outliers
        ]
    )
    labels = vote_labels(table)
    assert labels["ferplus_majority"].tolist() == [NEUTRAL, -1, -1, -1, NEUTRAL]
    assert labels["expression_soft_mask"].all(1).tolist() == [True, True, False, False, True]
    assert labels["expression_soft"][0, [NEUTRAL, HAPPY, CONTEMPT]] == pytest.approx([0.6, 0.3, 0.1])
    assert labels["expression_soft"][labels["expression_soft_mask"].all(1)].sum(1) == pytest.approx(1.0)


def test_a_distribution_target_pushes_contempt_down_where_a_fer2013_label_cannot():
    raw = torch.zeros(1, len(EXPRESSIONS), 1, requires_grad=True)
    fer2013_mask = torch.tensor([[name != "contempt" for name in EXPRESSIONS]])
    expression_loss(raw, torch.tensor([HAPPY]), fer2013_mask).backward()
    assert raw.grad[0, CONTEMPT, 0] == 0  # masked out: the 0.1.0 failure (contempt never learns a negative)
    raw.grad = None
    soft = torch.zeros(1, len(EXPRESSIONS))
    soft[0, HAPPY] = 1.0
    expression_loss(raw, soft, torch.ones(1, len(EXPRESSIONS), dtype=torch.bool)).backward()
    assert raw.grad[0, CONTEMPT, 0] > 0  # gradient descent lowers the contempt logit


def test_one_hot_distributions_give_the_class_index_loss():
    torch.manual_seed(0)
    raw, target = torch.randn(6, len(EXPRESSIONS), 1), torch.randint(0, 7, (6,))
    mask = torch.ones(6, len(EXPRESSIONS), dtype=torch.bool)
    mask[:, CONTEMPT] = False
    mask[5] = False  # an unlabelled face counts for nothing
    one_hot = torch.nn.functional.one_hot(target, len(EXPRESSIONS)).float()
    assert expression_loss(raw, one_hot, mask) == pytest.approx(expression_loss(raw, target, mask).item(), abs=1e-6)


def test_ferplus_votes_join_every_fer2013_row_and_give_a_majority_to_most_publictest_faces():
    path = shared_path("data", "fer2013", "ferplus_votes.csv")
    by_row = read_votes(path)
    assert len(by_row) == 32298 - 159  # the 159 rows FER+ dropped have no votes
    rows = sorted(by_row)
    labels = vote_labels(np.stack([by_row[r] for r in rows]))
    public_test = np.array(rows) >= 28709  # rows are sorted Training first
    majority = labels["ferplus_majority"][public_test]
    assert (majority >= 0).sum() == 3199
    assert (majority == CONTEMPT).sum() > 0  # real contempt faces to score


def test_pts_files_with_and_without_the_300w_header(tmp_path: Path):
    points = np.arange(136, dtype=np.float32).reshape(68, 2) / 3
    body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in points)
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    (tmp_path / "b.pts").write_text(body + "\n")
    for name in ("a.pts", "b.pts"):
        assert np.allclose(read_pts(tmp_path / name), points, atol=1e-5)


def test_300w_faces_split_by_photo_with_zero_based_landmarks_inside_the_crop():
    data = W300(shared_path("data", "300w"))
    faces = list(data)
    assert len(faces) == 1207
    splits = {}
    for face in faces:
        splits.setdefault(face.meta["subject"], set()).add(face.meta["split"])
        assert face.labels["landmarks"].shape == (68, 2)
        height, width = face.image.shape[:2]
        assert (face.labels["landmarks"] > -1).all() and (face.labels["landmarks"] < max(height, width)).all()
    assert all(len(s) == 1 for s in splits.values())  # a photo's faces never straddle train and val
    assert 0.15 < np.mean([face.meta["split"] == "val" for face in faces]) < 0.25
    assert w300_split("100032540_1") == w300_split("100032540_2")
