"""`qface eval`: the standard metric of every task on every validation split, a bias table, JSON + markdown.

Labels that come from the teacher (MediaPipe pose and landmarks) are scored as *agreement with the teacher* and
named so; they are never reported as accuracy against ground truth.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from qface.data.source import Source
from qface.model.qface import QFace, precision_context
from qface.tasks import CELEBA_ATTRIBUTES, EXPRESSIONS, TASKS, Task


@torch.inference_mode()
def predict_source(
    model: QFace, source: Source, batch_size: int = 256, network=None, precision: str = "fp32"
) -> dict[str, np.ndarray]:
    """Each task's scored prediction (`Task.scored`) for every face of a split, in order (no augmentation).
    `network` runs the forward pass on the chips in the model's stead (qface.onnx.OnnxModel)."""
    if network is not None and source.uses_features:
        raise ValueError(f"{source.name}: another network runs on chips, not on cached features")
    collected: dict[str, list[np.ndarray]] = {}
    device = next(model.parameters()).device
    tasks = [task for task in [*source.tasks, "identity"] if task in model.task_names(None)]
    for start in range(0, len(source), batch_size):
        inputs = source.load(np.arange(start, min(start + batch_size, len(source))))["inputs"]
        inputs = {name: values.to(device) for name, values in inputs.items()}
        with precision_context(precision, device):
            if "maps" in inputs:
                output = model.forward_cached(inputs["maps"], inputs["embedding"], tasks, inputs.get("tuned_input"))
            else:
                output = (network or model)(inputs["images"], tasks)
        decoded = output.decoded(identity="identity" in model.task_names(None))
        for name, values in decoded.items():
            collected.setdefault(name, []).append(values[TASKS[name].scored].float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def score_source(source: Source, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Every metric the split's labels allow (`Task.score`); metrics with no labelled face in the split are left out.
    Labels from the teacher are scored as agreement with it, under names starting `teacher_`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty subgroups give NaN, dropped below
        scores = {}
        for task in scored_tasks(source, predictions):
            a, name = source.arrays, task.name
            mask, taught = a.get(f"{name}_mask"), a.get(f"{name}_taught")
            parts = {"": mask} if taught is None else {"": mask & ~taught[:, None], "teacher_": mask & taught[:, None]}
            for prefix, labelled in parts.items():
                if labelled is None or labelled.any():
                    scores |= {prefix + k: v for k, v in task.score(predictions[name], a[name], labelled).items()}
        if "ferplus_majority" in source.arrays and "expression" in predictions:  # FER+'s protocol, 8 classes
            voted = (source.arrays["ferplus_majority"] >= 0)[:, None]
            majority = TASKS["expression"].score(predictions["expression"], source.arrays["ferplus_majority"], voted)
            scores |= {key.replace("expression_", "ferplus_"): value for key, value in majority.items()}
    return {key: value for key, value in scores.items() if not np.isnan(value)}


def scored_tasks(source: Source, predictions: dict[str, np.ndarray]) -> list[Task]:
    """The tasks with a prediction and labels in the split: the tasks it trains, and label columns without a mask
    (CelebA's identities for verification)."""
    unmasked = [name for name in source.arrays if name in TASKS and f"{name}_mask" not in source.arrays]
    return [
        task
        for task in TASKS.values()
        if task.score and task.name in predictions and task.name in [*source.tasks, *unmasked]
    ]


def confusion(predicted: np.ndarray, truth: np.ndarray, classes: int = len(EXPRESSIONS)) -> np.ndarray:
    """Rows: true class, columns: predicted class (counts)."""
    return np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def bias_table(source: Source, predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The same metrics per subgroup, where the dataset labels subgroups (UTKFace gender/race, CelebA Male/Young)."""
    a, groups = source.arrays, {}
    for field in ("gender", "race"):
        if field in a:
            for value in np.unique(a[field]):
                groups[f"{field}={value}"] = a[field] == value
    if "attributes" in source.tasks and "gender" not in a:  # CelebA; UTKFace's Male is its gender, above
        for name in ("Male", "Young"):
            index = CELEBA_ATTRIBUTES.index(name)
            if a["attributes_mask"][:, index].all():
                column = a["attributes"][:, index] > 0.5
                groups[f"{name}=yes"], groups[f"{name}=no"] = column, ~column
    table = {}
    for group, members in groups.items():
        subset = {k: v[members] for k, v in predictions.items()}
        sub_source = _Subset(source, members)
        scores = score_source(sub_source, subset)
        table[group] = {"count": int(members.sum()), **{k: v for k, v in scores.items() if "/" not in k}}
    return table


class _Subset:
    """A view of a source restricted to some faces (for per-group scores)."""

    def __init__(self, source: Source, members: np.ndarray):
        self.tasks, self.teacher_tasks = source.tasks, source.teacher_tasks
        self.arrays = {k: v[members] for k, v in source.arrays.items()}


def evaluate_sources(model: QFace, sources: dict[str, Source]) -> dict[str, dict[str, float]]:
    return {name: score_source(src, predict_source(model, src)) for name, src in sources.items() if len(src)}


def selection_score(results: dict[str, dict[str, float]]) -> float:
    """One number to pick a checkpoint by: the mean over data sets of each task's `selection` metric in [0, 1]."""
    parts = []
    for scores in results.values():
        for key, value in scores.items():
            name = key.removeprefix("teacher_")
            for task in TASKS.values():
                if task.selection and (name == task.selection[0] or name.startswith(task.selection[0] + "_")):
                    parts.append(task.selection[1](value))
    return float(np.mean(parts)) if parts else 0.0


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Headline metrics, one row each (per-label metrics, keyed `…/label`, stay in the JSON)."""
    lines = ["| dataset | metric | value |", "|---|---|---:|"]
    for dataset, scores in results.items():
        lines += [f"| {dataset} | {k} | {v:.4f} |" for k, v in scores.items() if "/" not in k]
    return "\n".join(lines)


def wide_table(groups: dict[str, dict[str, float]]) -> str:
    """One row per subgroup, one column per metric: the bias table."""
    columns = list(dict.fromkeys(key for scores in groups.values() for key in scores))
    lines = ["| group | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for group, scores in groups.items():
        cells = [f"{scores[c]:.4g}" if c in scores else "" for c in columns]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
