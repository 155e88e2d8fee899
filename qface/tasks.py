"""The task registry: every output qface gives is declared here, once, from training to the result files.

A `Task` says which labels it predicts (in output order) and how wide its head is per label; how to train it
(`loss`) and turn the head's output into numbers (`decode`); how those numbers become a face's result fields
(`read`, shaped as `fields` say, which also gives the CSV columns); what it adds to a summary line and to an
annotated picture (`describe`, `annotate`); and how it is scored against labels (`score`, `selection`). `Face`,
the writers, the evaluation and the pictures read all of that from here, so adding a task is adding one
`Task(...)` to `TASKS` (tests/test_registry.py adds one).

Every loss takes the head's raw output (B, Q, K), a target and a (B, Q) boolean mask of which labels the
sample's dataset actually provides, so datasets that label only some tasks (or some classes) train only those.
torch is imported inside the functions that need it: the registry itself (labels, fields, columns, scores) is
read by the torch-free pipeline and command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from qface import metrics

if TYPE_CHECKING:
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


MIN_AU_POSITIVES = 10  # AUs with fewer positive faces in a split are too noisy to score


@dataclass(frozen=True)
class Field:
    """One result field of a face and its shape, which fixes its JSON value and CSV columns:
    "labels" {label: number} → `name.label` per task label; "value" a number or word → `name`;
    "points" [[x, y], …] one per task label → `name.i.x`, `name.i.y`; "vector" [numbers] → `name.i`.
    `scalar` is the type of every one of its columns' values (str for a word), for typed files such as Parquet."""

    name: str
    kind: Literal["labels", "value", "points", "vector"]
    scalar: type[float] | type[str] = float


@dataclass(frozen=True)
class Marks:
    """What a task adds to a face in an annotated picture: caption text, dots, and lines (start, end, RGB)."""

    text: str | None = None
    points: list | None = None
    lines: list[tuple[Any, Any, tuple[int, int, int]]] = field(default_factory=list)


@dataclass(frozen=True)
class Task:
    """One output of the model, declared once. Labels in output order and the head width per label shape the
    network; `loss` trains it (None: not trained), `decode` turns its head's output into named tensors, of which
    `scored` is the prediction `score(prediction, target, mask) -> {metric: value}` compares with labels;
    `read(decoded, aligned)` gives the face's result `fields` (one face's decoded numpy arrays; `aligned` maps
    chip coordinates to the image); `describe(face)` is its part of a summary line, `annotate(face)` its marks on
    a picture; `selection` names the metric that picks checkpoints and maps it to [0, 1] (higher is better)."""

    name: str
    labels: tuple[str, ...]
    outputs_per_label: int
    loss: Callable[[Tensor, Tensor, Tensor], Tensor] | None
    decode: Callable[[Tensor], dict[str, Tensor]]
    read: Callable[[dict[str, np.ndarray], Any], dict[str, Any]]
    fields: tuple[Field, ...]
    scored: str
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None], dict[str, float]] | None = None
    selection: tuple[str, Callable[[float], float]] | None = None
    describe: Callable[[Any], str | None] | None = None
    annotate: Callable[[Any], Marks] | None = None
    uses_queries: bool = True  # False: the output comes from the backbone's own descriptor (identity)

    @property
    def num_queries(self) -> int:
        return len(self.labels) if self.uses_queries else 0

    def columns(self, vector_size: int) -> list[str]:
        """The CSV columns of this task's fields, in order (`vector_size`: the length of "vector" fields)."""
        return [column for f in self.fields for column in self.field_columns(f, vector_size)]

    def field_columns(self, f: Field, vector_size: int) -> list[str]:
        """The CSV columns of one of this task's fields."""
        if f.kind == "labels":
            return [f"{f.name}.{label}" for label in self.labels]
        if f.kind == "value":
            return [f.name]
        if f.kind == "points":
            return [f"{f.name}.{i}.{axis}" for i in range(len(self.labels)) for axis in "xy"]
        return [f"{f.name}.{i}" for i in range(vector_size)]


def rounded(values, digits: int = 4) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def flat_field(name: str, value: Any) -> dict[str, Any]:
    """One field as flat columns, the way `Field` kinds name them."""
    if isinstance(value, dict):
        return {f"{name}.{key}": v for key, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], list):
        return {f"{name}.{i}.{axis}": v for i, point in enumerate(value) for axis, v in zip("xy", point)}
    if isinstance(value, list):
        return {f"{name}.{i}": v for i, v in enumerate(value)}
    return {name: value}


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the labelled entries only; zero (with a graph) when nothing in the batch is labelled."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def expression_loss(raw: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy over the classes the sample's dataset has (FER2013 has no contempt, CK+ no neutral). The target
    is a class index, or a (B, classes) label distribution (FER+ crowd votes), which teaches every class's negatives."""
    import torch
    import torch.nn.functional as F

    labelled = mask.any(dim=1)
    logits = raw[..., 0].masked_fill(~mask, float("-inf"))
    logits = torch.where(labelled[:, None], logits, torch.zeros_like(logits))
    soft = target if target.is_floating_point() else F.one_hot(target.clamp(min=0), mask.shape[1]).to(raw.dtype)
    log_probs = torch.log_softmax(logits, dim=-1).masked_fill(~mask, 0.0)
    return _masked_mean(-(soft * log_probs).sum(-1), labelled)


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


# --- read-outs: one face's decoded arrays → its result fields ------------------------------------------------------


def read_expression(out: dict[str, np.ndarray], aligned) -> dict[str, Any]:
    probs = out["probs"]
    return {"expression": dict(zip(EXPRESSIONS, rounded(probs))), "top_expression": EXPRESSIONS[int(np.argmax(probs))]}


def read_probabilities(name: str, labels: tuple[str, ...]):
    return lambda out, aligned: {name: dict(zip(labels, rounded(out["probs"])))}


def read_age(out: dict[str, np.ndarray], aligned) -> dict[str, Any]:
    return {"age": round(float(out["years"]), 2)}


def read_pose(out: dict[str, np.ndarray], aligned) -> dict[str, Any]:
    pitch, yaw, roll = out["degrees"]
    # The chip is levelled by alignment: its roll plus the alignment's rotation is the roll in the image.
    matrix = aligned.chip_to_image
    roll = roll + math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    return {"pose": dict(zip(POSE_ANGLES, rounded([pitch, yaw, (roll + 180) % 360 - 180], 2)))}


def read_landmarks(out: dict[str, np.ndarray], aligned) -> dict[str, Any]:
    return {"landmarks": rounded(aligned.to_image(out["points"] * aligned.chip.shape[1]), 2)}


def read_identity(out: dict[str, np.ndarray], aligned) -> dict[str, Any]:
    return {"embedding": rounded(out["embedding"], 6)}


# --- summary lines and pictures --------------------------------------------------------------------------------------


def describe_expression(face) -> str:
    return f"{face.top_expression} {face.expression[face.top_expression]:.2f}"


def describe_active(title: str, name: str):
    """The labels with probability ≥ 0.5."""
    return lambda face: f"{title}: " + (", ".join(k for k, v in getattr(face, name).items() if v >= 0.5) or "none")


def describe_pose(face) -> str:
    return "pitch {pitch:+.0f}° yaw {yaw:+.0f}° roll {roll:+.0f}°".format(**face.pose)


AXIS_COLOURS = ((230, 60, 60), (60, 200, 60), (70, 120, 255))  # face x (image right), y (up), z (toward viewer)


def pose_axes(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The face's x, y, z axes as (3, 2) image-plane directions (x right, y down) under DESIGN.md's signs:
    yaw > 0 turns the nose to the image's right, pitch > 0 up, roll > 0 clockwise as the viewer sees it."""
    p, y, r = (math.radians(v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    axes = np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], float).T  # columns: right, up, toward the viewer
    return (rz @ ry @ rx @ axes).T[:, :2]


def annotate_pose(face) -> Marks:
    """Pose axes from the nose tip, half a box long."""
    nose = np.asarray(face.landmarks[30] if face.landmarks else face.points[2])
    length = 0.5 * (face.box[2] - face.box[0])
    return Marks(lines=[(nose, nose + length * d, c) for d, c in zip(pose_axes(**face.pose), AXIS_COLOURS)])


# --- scores: decoded predictions of a split against its labels ------------------------------------------------------


def score_expression(probs: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Argmax over all outputs, as a user gets it (no class is masked out, whatever classes the data set has):
    accuracy, mean class accuracy and each class's recall."""
    labelled = mask.any(1)
    predicted, truth = probs.argmax(1)[labelled], truth[labelled]
    recalls = {f"expression_recall/{n}": float((predicted[truth == k] == k).mean()) for k, n in enumerate(EXPRESSIONS)}
    return {
        "expression_accuracy": metrics.accuracy(predicted, truth),
        "expression_mean_class_accuracy": metrics.mean_class_accuracy(predicted, truth),
    } | recalls


def score_action_units(probs: np.ndarray, truth: np.ndarray, coded: np.ndarray) -> dict[str, float]:
    """F1 of each AU over the faces whose data set codes it, where it has MIN_AU_POSITIVES positives."""
    truth = truth > 0.5
    scored = [j for j in range(len(ACTION_UNITS)) if truth[coded[:, j], j].sum() >= MIN_AU_POSITIVES]
    per_au = {ACTION_UNITS[j]: metrics.f1(probs[coded[:, j], j] > 0.5, truth[coded[:, j], j]) for j in scored}
    if not per_au:
        return {}
    return {"au_mean_f1": float(np.mean(list(per_au.values())))} | {f"au_f1/{k}": v for k, v in per_au.items()}


def score_attributes(probs: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Accuracy of each attribute over the faces labelling it; a data set labelling one attribute (UTKFace: Male)
    gets it as its headline number."""
    columns = mask.any(0)
    correct = (probs > 0.5) == (truth > 0.5)
    per_attribute = {CELEBA_ATTRIBUTES[j]: float(correct[mask[:, j], j].mean()) for j in np.flatnonzero(columns)}
    scores = {}
    if columns.sum() > 1:
        scores["attributes_mean_accuracy"] = float(np.mean(list(per_attribute.values())))
    elif columns.sum() == 1:
        scores[f"{next(iter(per_attribute))}_accuracy"] = next(iter(per_attribute.values()))
    return scores | {f"attribute_accuracy/{name}": value for name, value in per_attribute.items()}


def score_age(years: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    labelled = mask[:, 0]
    return {
        "age_mae": metrics.mae(years[labelled], truth[labelled]),
        "age_cs5": metrics.cumulative_score(years[labelled], truth[labelled]),
    }


def score_pose(degrees: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    labelled = mask.all(1)
    per_angle = {
        f"pose_mae/{a}": metrics.mae(degrees[labelled, j], truth[labelled, j]) for j, a in enumerate(POSE_ANGLES)
    }
    return per_angle | {"pose_mae": float(np.mean(list(per_angle.values())))}


def score_landmarks(points: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    labelled = mask.all(1)
    return {"landmark_nme": metrics.nme(points[labelled], truth[labelled])}


def score_identity(embeddings: np.ndarray, identities: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    return {"verification_accuracy": metrics.verification_accuracy(embeddings, identities)}


def _error_to_unit(scale: float) -> Callable[[float], float]:
    return lambda error: max(0.0, 1 - error / scale)


def _same(value: float) -> float:
    return value


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "expression", EXPRESSIONS, 1, expression_loss, decode_expression, read_expression,
            (Field("expression", "labels"), Field("top_expression", "value", str)), "probs", score_expression,
            ("expression_accuracy", _same), describe_expression, lambda face: Marks(describe_expression(face)),
        ),
        Task(
            "action_units", ACTION_UNITS, 1, binary_loss, decode_binary,
            read_probabilities("action_units", ACTION_UNITS), (Field("action_units", "labels"),), "probs",
            score_action_units, ("au_mean_f1", _same), describe_active("AUs", "action_units"),
        ),
        Task(
            "attributes", tuple(CELEBA_ATTRIBUTES), 1, binary_loss, decode_binary,
            read_probabilities("attributes", tuple(CELEBA_ATTRIBUTES)), (Field("attributes", "labels"),), "probs",
            score_attributes, ("attributes_mean_accuracy", _same), describe_active("attributes", "attributes"),
        ),
        Task(
            "age", ("age",), MAX_AGE + 1, age_loss, decode_age, read_age, (Field("age", "value"),), "years",
            score_age, ("age_mae", _error_to_unit(10)), lambda face: f"age {face.age:.0f}",
            lambda face: Marks(f"{face.age:.0f}y"),
        ),
        Task(
            "pose", POSE_ANGLES, 1, pose_loss, decode_pose, read_pose, (Field("pose", "labels"),), "degrees",
            score_pose, ("pose_mae", _error_to_unit(20)), describe_pose, annotate_pose,
        ),
        Task(
            "landmarks", LANDMARK_NAMES, 2, landmark_loss, decode_landmarks, read_landmarks,
            (Field("landmarks", "points"),), "points", score_landmarks,
            annotate=lambda face: Marks(points=face.landmarks),
        ),
        Task(
            "identity", ("embedding",), 0, None, decode_identity, read_identity, (Field("embedding", "vector"),),
            "embedding", score_identity, uses_queries=False,
        ),
    )
}  # fmt: skip


def resolve(names: list[str] | tuple[str, ...] | None) -> list[Task]:
    """Tasks by name in registry order (so outputs never depend on how a caller spelled the list)."""
    if names is None:
        return list(TASKS.values())
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}")
    return [task for task in TASKS.values() if task.name in names]


def result_field(name: str) -> tuple[Task, Field] | None:
    """The task declaring result field `name`, and the field."""
    return next(((t, f) for t in TASKS.values() for f in t.fields if f.name == name), None)
