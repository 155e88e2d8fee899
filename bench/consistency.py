"""What a user gets, measured through the whole pipeline (decode → detect or crop mode → align → network) on the
validation faces of ../shared — the rows of the model card that the cached-feature eval cannot show:

- FER2013 PublicTest 48×48 crops through the crop mode: accuracy of `top_expression` (argmax over all 8 outputs)
  against FER2013's labels and against FER+'s majority label;
- CelebA val crops (178×218) through the crop mode and through the detector: mean attribute accuracy and 10-fold
  identity verification, the same faces both ways, and how far their answers move between the two;
- mirror consistency: each CelebA val / UTKFace val crop and its mirror image, through the detector: mean and
  largest age change, top-expression agreement — without and with mirror averaging (`mirror=True`).

    python bench/consistency.py [--weights DIR] [--limit N] [--out bench/results/consistency.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qface import metrics
from qface.analyzer import FaceAnalyzer
from qface.data.datasets import FER2013, CelebA, UTKFace, utkface_split
from qface.data.ferplus import read_votes, vote_labels
from qface.tasks import CELEBA_ATTRIBUTES, EXPRESSIONS


def first_face(analyzer: FaceAnalyzer, images: list[np.ndarray]) -> list:
    """The top-scoring face of each image, None where none was found."""
    return [faces[0] if faces else None for faces in analyzer.analyze_arrays(images)]


def batched(analyzer: FaceAnalyzer, images: list[np.ndarray], size: int = 32) -> list:
    faces = []
    for start in range(0, len(images), size):
        faces += first_face(analyzer, images[start : start + size])
    return faces


def fer_crop_mode(weights, limit: int | None) -> dict:
    faces = [f for f in FER2013() if f.meta["split"] == "val"][:limit]
    votes = read_votes(FER2013().root / "ferplus_votes.csv")
    empty = np.zeros(len(EXPRESSIONS) + 2, np.float32)
    majority = vote_labels(np.stack([votes.get(f.meta["source"], empty) for f in faces]))["ferplus_majority"]
    analyzer = FaceAnalyzer(weights, tasks=["expression"], detector="crop")
    results = batched(analyzer, [f.image for f in faces])
    predicted = np.array([EXPRESSIONS.index(r.top_expression) for r in results])
    truth = np.array([f.labels["expression"] for f in faces])
    voted = majority >= 0
    confusion = np.bincount(majority[voted] * 8 + predicted[voted], minlength=64).reshape(8, 8)
    return {
        "faces": len(faces),
        "detected_by_hog": int(sum(r.score > 0 for r in results)),
        "accuracy_fer2013_labels": metrics.accuracy(predicted, truth),
        "accuracy_ferplus_majority": metrics.accuracy(predicted[voted], majority[voted]),
        "ferplus_faces": int(voted.sum()),
        "share_predicted_contempt": float((predicted == EXPRESSIONS.index("contempt")).mean()),
        "ferplus_confusion_rows_true_cols_predicted": confusion.tolist(),
    }


def attribute_accuracy(results: list, truth: np.ndarray) -> float:
    found = [i for i, r in enumerate(results) if r is not None]
    predicted = np.array([[results[i].attributes[name] > 0.5 for name in CELEBA_ATTRIBUTES] for i in found])
    return float((predicted == (truth[found] > 0.5)).mean())


def celeba_modes(weights, limit: int | None, modes: tuple[str, str] = ("dlib-hog", "crop")) -> dict:
    faces = [f for f in CelebA() if f.meta["split"] == "val"][:limit]
    truth = np.stack([f.labels["attributes"] for f in faces])
    identities = np.array([f.meta["identity"] for f in faces])
    report = {"faces": len(faces)}
    runs = {}
    for mode in modes:
        analyzer = FaceAnalyzer(weights, tasks=["attributes", "age", "expression", "identity"], detector=mode)
        runs[mode] = results = batched(analyzer, [f.image for f in faces])
        found = [i for i, r in enumerate(results) if r is not None]
        embeddings = np.array([results[i].embedding for i in found])
        report[mode] = {
            "found": len(found),
            "attributes_mean_accuracy": attribute_accuracy(results, truth),
            "verification_accuracy": metrics.verification_accuracy(embeddings, identities[found]),
        }
    first, second = (runs[mode] for mode in modes)
    both = [i for i in range(len(faces)) if first[i] is not None and second[i] is not None]
    pairs = [(first[i], second[i]) for i in both]
    report[f"{modes[1]}_vs_{modes[0]}_same_faces"] = {
        "faces": len(both),
        **{
            f"verification_accuracy_{mode}": metrics.verification_accuracy(
                np.array([runs[mode][i].embedding for i in both]), identities[both]
            )
            for mode in modes
        },
        "mean_age_change": float(np.mean([abs(a.age - b.age) for a, b in pairs])),
        "top_expression_agreement": float(np.mean([a.top_expression == b.top_expression for a, b in pairs])),
        "attribute_answer_agreement": float(
            np.mean([[(a.attributes[n] > 0.5) == (b.attributes[n] > 0.5) for n in CELEBA_ATTRIBUTES] for a, b in pairs])
        ),
    }
    return report


def mirror_consistency(weights, limit: int | None) -> dict:
    celeba = [f.image for f in CelebA() if f.meta["split"] == "val"][:limit]
    utkface = [f.image for f in UTKFace() if utkface_split(f.meta["source"]) == "val"][:limit]
    images = celeba + utkface
    report = {"faces": len(images)}
    for mirror in (False, True):
        analyzer = FaceAnalyzer(weights, tasks=["age", "expression"], detector="dlib-hog", mirror=mirror)
        start = time.perf_counter()
        plain = batched(analyzer, images)
        mirrored = batched(analyzer, [np.ascontiguousarray(image[:, ::-1]) for image in images])
        seconds = time.perf_counter() - start
        pairs = [(a, b) for a, b in zip(plain, mirrored) if a is not None and b is not None]
        changes = np.array([abs(a.age - b.age) for a, b in pairs])
        report[f"mirror={mirror}"] = {
            "pairs": len(pairs),
            "mean_age_change": float(changes.mean()),
            "max_age_change": float(changes.max()),
            "top_expression_agreement": float(np.mean([a.top_expression == b.top_expression for a, b in pairs])),
            "seconds_for_all_images_twice": round(seconds, 1),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--limit", type=int, help="at most N faces per data set")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--detectors", nargs=2, metavar=("A", "B"), help="only the CelebA part, comparing these two detectors"
    )
    args = parser.parse_args()
    model = FaceAnalyzer(args.weights, detector="none").model.model_id
    if args.detectors:
        report = {"model": model, "celeba_val_detectors": celeba_modes(args.weights, args.limit, args.detectors)}
    else:
        report = {
            "model": model,
            "fer2013_publictest_crop_mode": fer_crop_mode(args.weights, args.limit),
            "celeba_val_crop_mode_vs_detector": celeba_modes(args.weights, args.limit),
            "mirror": mirror_consistency(args.weights, args.limit),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
