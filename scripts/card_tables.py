"""Tables for weights/MODEL_CARD.md from `qface eval --out` JSON files (so the card shows measured numbers only).

python scripts/card_tables.py runs/cpu_default/eval.json ablation:runs/ablation_full/eval.json ...
"""

from __future__ import annotations

import json
import sys

from qface.eval.evaluate import wide_table
from qface.tasks import EXPRESSIONS

HEADLINES = [
    ("fer2013", "expression_accuracy", "FER2013 PublicTest, original labels, argmax over all 8 outputs"),
    ("fer2013", "expression_mean_class_accuracy", "FER2013 PublicTest mean class accuracy (original labels)"),
    ("fer2013", "ferplus_accuracy", "FER+ PublicTest, majority label, 8 classes"),
    ("fer2013", "ferplus_mean_class_accuracy", "FER+ PublicTest mean class accuracy"),
    ("ckplus", "expression_accuracy", "CK+ fold-0 expression accuracy (argmax over all 8 outputs)"),
    ("ckplus", "au_mean_f1", "CK+ fold-0 mean AU F1 (AUs with ≥ 10 positive faces)"),
    ("celeba", "attributes_mean_accuracy", "CelebA val mean attribute accuracy (40)"),
    ("utkface", "age_mae", "UTKFace val age MAE (years)"),
    ("utkface", "age_cs5", "UTKFace val CS(5)"),
    ("utkface", "Male_accuracy", "UTKFace val gender (Male) accuracy"),
    ("celeba", "verification_accuracy", "CelebA val identity verification, 10-fold"),
    ("300w", "landmark_nme", "300-W held-out faces, 68-point NME (inter-ocular, human labels)"),
    ("celeba", "teacher_pose_mae", "CelebA val pose MAE vs MediaPipe teacher (°)"),
    ("utkface", "teacher_pose_mae", "UTKFace val pose MAE vs teacher (°)"),
    ("celeba", "teacher_landmark_nme", "CelebA val 68-landmark NME vs teacher (inter-ocular)"),
]


def main(paths: list[str]) -> None:
    runs = {}
    for item in paths:
        name, _, path = item.rpartition(":")
        runs[name or "model"] = json.loads(open(path).read())
    names = list(runs)
    print("| metric | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for dataset, key, label in HEADLINES:
        cells = [runs[n]["results"].get(dataset, {}).get(key) for n in names]
        print(f"| {label} | " + " | ".join("" if c is None else f"{c:.4g}" for c in cells) + " |")
    first = runs[names[0]]
    for dataset, scores in first["results"].items():
        per_label: dict[str, dict[str, float]] = {}
        for key, value in scores.items():
            if "/" in key:
                metric, label = key.split("/", 1)
                per_label.setdefault(label, {})[metric] = value
        if per_label:
            print(f"\n#### {dataset}: per label\n\n{wide_table(per_label)}")
    for dataset, matrix in first.get("ferplus_confusion", {}).items():
        print(f"\n#### {dataset}: FER+ confusion (rows: majority label, columns: top_expression)\n")
        print("| | " + " | ".join(EXPRESSIONS) + " |\n|---|" + "---:|" * len(EXPRESSIONS))
        for name, row in zip(EXPRESSIONS, matrix):
            print(f"| {name} | " + " | ".join(str(count) for count in row) + " |")
    for dataset, table in first["bias"].items():
        if table:
            print(f"\n#### {dataset}: subgroups\n\n{wide_table(table)}")


if __name__ == "__main__":
    main(sys.argv[1:])
