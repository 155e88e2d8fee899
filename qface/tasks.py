"""The task registry: every output qface gives is declared here, once.

A task says which labels it predicts (in output order), how many label queries it asks the decoder for, how
wide its head is per query, and how to train (`loss`), score (`metric`) and read out (`decode`) its head.
Adding a task is adding one `Task(...)` to `TASKS`: the model, trainer and results pick it up from there.

Every loss takes the head's raw output (B, Q, K), a target and a (B, Q) boolean mask of which labels the
sample's dataset actually provides, so datasets that label only some tasks (or some classes) train only those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside the functions: labels and result fields are readable without it
    from torch import Tensor

EXPRESSIONS = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)  # AffectNet order

# Union of BP4D (1 2 4 6 7 10 12 14 15 17 23 24), DISFA (1 2 4 6 9 12 25 26) and the AUs CK+ codes in at least
# 10 sequences (5 16 20 27 besides). CK+'s action descriptors (38 and up) are not action units and are left out.
ACTION_UNITS = tuple(f"AU{n:02d}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 27))

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

MAX_AGE = 100  # the age head is a distribution over whole years 0..MAX_AGE
POSE_ANGLES = ("pitch", "yaw", "roll")
POSE_SCALE = 90.0  # the pose head predicts degrees / POSE_SCALE, which keeps its outputs near unit size
LANDMARK_NAMES = tuple(f"lm{i:02d}" for i in range(68))  # iBUG-300W order, 0-indexed
AGE_SIGMA = 2.0  # width (years) of the Gaussian label distribution the age head learns (DLDL)


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    outputs_per_label: int
    loss: Callable[[Tensor, Tensor, Tensor], Tensor] | None
    decode: Callable[[Tensor], dict[str, Tensor]]
    metric: str
    uses_queries: bool = True  # False: the output comes from the backbone's own descriptor (identity)

    @property
    def num_queries(self) -> int:
        return len(self.labels) if self.uses_queries else 0


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the labelled entries only; zero (with a graph) when nothing in the batch is labelled."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def expression_loss(raw: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy over the classes the sample's dataset has (FER2013 has no contempt, CK+ no neutral)."""
    import torch
    import torch.nn.functional as F

    logits = raw[..., 0].masked_fill(~mask, float("-inf"))
    labelled = mask.any(dim=1)
    safe_logits = torch.where(labelled[:, None], logits, torch.zeros_like(logits))
    losses = F.cross_entropy(safe_logits, target.clamp(min=0), reduction="none")
    return _masked_mean(losses, labelled)


def binary_loss(raw: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-label binary cross-entropy (action units, attributes), only where the dataset codes the label."""
    import torch.nn.functional as F

    losses = F.binary_cross_entropy_with_logits(raw[..., 0], target.float(), reduction="none")
    return _masked_mean(losses, mask)


def age_loss(raw: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Label-distribution learning: cross-entropy to a Gaussian around the true age, plus L1 on the
    expectation (in decades) so the read-out, not only the shape, is trained."""
    import torch
    import torch.nn.functional as F

    log_probs = F.log_softmax(raw[:, 0], dim=-1)
    years = torch.arange(MAX_AGE + 1, dtype=raw.dtype, device=raw.device)
    soft = torch.softmax(-0.5 * ((years - target[:, None]) / AGE_SIGMA) ** 2, dim=-1)
    expected = (log_probs.exp() * years).sum(-1)
    losses = -(soft * log_probs).sum(-1) + (expected - target).abs() / 10.0
    return _masked_mean(losses, mask[:, 0])


def pose_loss(raw: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    import torch.nn.functional as F

    return _masked_mean(F.smooth_l1_loss(raw[..., 0], target / POSE_SCALE, reduction="none", beta=0.05), mask)


def landmark_loss(raw: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """L1 in crop-normalised coordinates ([0, 1] across the aligned crop)."""
    return _masked_mean((0.5 + raw - target).abs().sum(-1), mask)


def decode_expression(raw: Tensor) -> dict[str, Tensor]:
    import torch

    return {"probs": torch.softmax(raw[..., 0], dim=-1)}


def decode_binary(raw: Tensor) -> dict[str, Tensor]:
    import torch

    return {"probs": torch.sigmoid(raw[..., 0])}


def decode_age(raw: Tensor) -> dict[str, Tensor]:
    import torch

    distribution = torch.softmax(raw[:, 0], dim=-1)
    years = torch.arange(MAX_AGE + 1, dtype=raw.dtype, device=raw.device)
    return {"years": (distribution * years).sum(-1), "distribution": distribution}


def decode_pose(raw: Tensor) -> dict[str, Tensor]:
    return {"degrees": raw[..., 0] * POSE_SCALE}


def decode_landmarks(raw: Tensor) -> dict[str, Tensor]:
    return {"points": 0.5 + raw}  # (B, 68, 2), x and y as fractions of the aligned crop's width and height


def decode_identity(embedding: Tensor) -> dict[str, Tensor]:
    import torch.nn.functional as F

    return {"embedding": F.normalize(embedding, dim=-1), "descriptor": embedding}


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("expression", EXPRESSIONS, 1, expression_loss, decode_expression, "accuracy"),
        Task("action_units", ACTION_UNITS, 1, binary_loss, decode_binary, "mean_f1"),
        Task("attributes", tuple(CELEBA_ATTRIBUTES), 1, binary_loss, decode_binary, "mean_accuracy"),
        Task("age", ("age",), MAX_AGE + 1, age_loss, decode_age, "mae"),
        Task("pose", POSE_ANGLES, 1, pose_loss, decode_pose, "mae"),
        Task("landmarks", LANDMARK_NAMES, 2, landmark_loss, decode_landmarks, "nme"),
        Task("identity", ("embedding",), 0, None, decode_identity, "verification", uses_queries=False),
    )
}


def resolve(names: list[str] | tuple[str, ...] | None) -> list[Task]:
    """Tasks by name in registry order (so outputs never depend on how a caller spelled the list)."""
    if names is None:
        return list(TASKS.values())
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}")
    return [task for task in TASKS.values() if task.name in names]
