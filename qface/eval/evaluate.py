"""`qface eval`: the standard metric of every task on every validation split, a bias table, JSON + markdown.

Labels that come from the teacher (MediaPipe pose and landmarks) are scored as *agreement with the teacher* and
named so; they are never reported as accuracy against ground truth.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from qface.data.source import Source
from qface.eval import metrics
from qface.model.qface import QFace
from qface.tasks import ACTION_UNITS, CELEBA_ATTRIBUTES, TASKS

MIN_AU_POSITIVES = 10  # AUs with fewer positive faces in a split are too noisy to score


@torch.inference_mode()
def predict_source(model: QFace, source: Source, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Decoded outputs for every face of a split, in order (no augmentation)."""
    collected: dict[str, list[np.ndarray]] = {}
    device = next(model.parameters()).device
    tasks = [task for task in source.tasks if task in model.task_names(None)]
    for start in range(0, len(source), batch_size):
        inputs = source.load(np.arange(start, min(start + batch_size, len(source))))["inputs"]
        inputs = {name: values.to(device) for name, values in inputs.items()}
        if "maps" in inputs:
            output = model.forward_cached(inputs["maps"], inputs["embedding"], tasks)
        else:
            output = model(inputs["images"], tasks)
        for name, values in output.decoded(identity="identity" in model.task_names(None)).items():
            key = next(iter(values)) if name != "age" else "years"
            collected.setdefault(name, []).append(values[key].float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def score_source(source: Source, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Every metric the split's labels allow; metrics with no labelled face in the split are left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty subgroups give NaN, dropped below
        scores = _scores(source, predictions)
    return {key: value for key, value in scores.items() if not np.isnan(value)}


def _scores(source: Source, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    a, scores = source.arrays, {}
    tasks = [task for task in source.tasks if task in predictions]
    taught = source.teacher_tasks  # labels from MediaPipe: scored as agreement with the teacher, named so
    if "expression" in tasks:
        classes = a["expression_mask"].any(0)
        probs = np.where(classes, predictions["expression"], -1.0)
        labelled = a["expression_mask"].any(1)
        predicted, truth = probs.argmax(1)[labelled], a["expression"][labelled]
        scores[f"expression_accuracy_{classes.sum()}class"] = metrics.accuracy(predicted, truth)
        scores[f"expression_mean_class_accuracy_{classes.sum()}class"] = metrics.mean_class_accuracy(predicted, truth)
    if "action_units" in tasks:  # each AU over the faces whose data set codes it
        truth, coded = a["action_units"] > 0.5, a["action_units_mask"]
        scored = [j for j in range(len(ACTION_UNITS)) if truth[coded[:, j], j].sum() >= MIN_AU_POSITIVES]
        per_au = {
            ACTION_UNITS[j]: metrics.f1(predictions["action_units"][coded[:, j], j] > 0.5, truth[coded[:, j], j])
            for j in scored
        }
        if per_au:
            scores["au_mean_f1"] = float(np.mean(list(per_au.values())))
            scores.update({f"au_f1/{k}": v for k, v in per_au.items()})
    if "attributes" in tasks:  # each attribute over the faces labelling it
        mask = a["attributes_mask"]
        columns = mask.any(0)
        correct = (predictions["attributes"] > 0.5) == (a["attributes"] > 0.5)
        per_attribute = {CELEBA_ATTRIBUTES[j]: float(correct[mask[:, j], j].mean()) for j in np.flatnonzero(columns)}
        if columns.sum() > 1:
            scores["attributes_mean_accuracy"] = float(np.mean(list(per_attribute.values())))
        elif columns.sum() == 1:  # a data set labelling one attribute (UTKFace: Male) gets it as a headline number
            scores[f"{next(iter(per_attribute))}_accuracy"] = next(iter(per_attribute.values()))
        scores.update({f"attribute_accuracy/{name}": value for name, value in per_attribute.items()})
    if "age" in tasks:
        labelled = a["age_mask"][:, 0]
        scores["age_mae"] = metrics.mae(predictions["age"][labelled], a["age"][labelled])
        scores["age_cs5"] = metrics.cumulative_score(predictions["age"][labelled], a["age"][labelled])
    if "pose" in tasks:
        teacher = "teacher_" if "pose" in taught else ""
        labelled = a["pose_mask"].all(1)
        for j, angle in enumerate(TASKS["pose"].labels):
            scores[f"{teacher}pose_mae/{angle}"] = metrics.mae(predictions["pose"][labelled, j], a["pose"][labelled, j])
        scores[f"{teacher}pose_mae"] = float(np.mean([scores[f"{teacher}pose_mae/{x}"] for x in TASKS["pose"].labels]))
    if "landmarks" in tasks:
        teacher = "teacher_" if "landmarks" in taught else ""
        labelled = a["landmarks_mask"].all(1)
        scores[f"{teacher}landmark_nme"] = metrics.nme(predictions["landmarks"][labelled], a["landmarks"][labelled])
    if "identity" in predictions and "identity" in a:
        scores["verification_accuracy"] = metrics.verification_accuracy(predictions["identity"], a["identity"])
    return scores


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
    """One number to pick a checkpoint by: the mean of each dataset's main score, errors mapped to [0, 1]."""
    parts = []
    for scores in results.values():
        for key, value in scores.items():
            if key.startswith("expression_accuracy") or key in ("au_mean_f1", "attributes_mean_accuracy"):
                parts.append(value)
            elif key == "age_mae":
                parts.append(max(0.0, 1 - value / 10))
            elif key in ("teacher_pose_mae", "pose_mae"):
                parts.append(max(0.0, 1 - value / 20))
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
