"""Pictures of results: annotated photos (boxes, landmarks, pose axes, expression, age) and, per face, the
decoder's cross-attention maps of chosen label queries over the aligned chip — where each label looked."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from qface.pipeline.results import Face
from qface.tasks import TASKS


def annotate(image: np.ndarray, faces: list[Face]) -> Image.Image:
    """The image with each face's box and what its tasks mark (`Task.annotate`): a caption, dots (the 5 detector
    points when no task draws points), lines."""
    picture = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    scale = max(picture.size) / 640
    width = max(1, round(2 * scale))
    font = ImageFont.load_default(size=max(10, round(14 * scale)))
    for face in faces:
        x1, y1, x2, y2 = face.box
        draw.rectangle([x1, y1, x2, y2], outline=(255, 210, 0), width=width)
        marks = [task.annotate(face) for task in TASKS.values() if task.annotate and face.answers(task)]
        dots = [point for mark in marks for point in mark.points or []]
        for x, y in dots or face.points:
            draw.ellipse([x - width, y - width, x + width, y + width], fill=(0, 255, 255))
        for start, end, colour in (line for mark in marks for line in mark.lines):
            draw.line([*start, *end], fill=colour, width=width + 1)
        texts = [mark.text for mark in marks if mark.text]
        caption = "  ·  ".join(([f"#{face.track}"] if face.track is not None else []) + texts)
        if caption:
            box = draw.textbbox((x1, y1), caption, font=font)
            top = y1 - (box[3] - box[1]) - 4
            draw.rectangle([x1, top, x1 + box[2] - box[0] + 4, y1], fill=(0, 0, 0))
            draw.text((x1 + 2, top), caption, fill=(255, 255, 255), font=font)
    return picture


def default_queries(face: Face) -> list[tuple[str, str]]:
    """The labels worth looking at for one face: its top expression, its likeliest AU and attribute, age, yaw
    and the nose tip."""
    chosen = []
    for task, probabilities in (("expression", face.expression), ("action_units", face.action_units),
                                ("attributes", face.attributes)):  # fmt: skip
        if probabilities:
            chosen.append((task, max(probabilities, key=probabilities.get)))
    chosen += [("age", "age"), ("pose", "yaw"), ("landmarks", "lm30")]
    return [(task, label) for task, label in chosen if face.attention and task in face.attention]


def attention_panel(face: Face, queries: list[tuple[str, str]] | None = None, layer: int = -1) -> Image.Image:
    """The chip, then one heat map per (task, label) query: that query's cross-attention (`layer`, averaged over
    heads) bilinearly upsampled over the chip."""
    if face.attention is None or face.chip is None:
        raise ValueError("analyze with attention=True to keep attention maps")
    chip = Image.fromarray(face.chip)
    size = chip.size[0]
    queries = queries or default_queries(face)
    panel = Image.new("RGB", (size * (len(queries) + 1), size + 18), (0, 0, 0))
    panel.paste(chip, (0, 18))
    draw = ImageDraw.Draw(panel)
    draw.text((4, 2), "aligned face", fill=(255, 255, 255))
    for column, (task, label) in enumerate(queries, start=1):
        weights = face.attention[task][layer, TASKS[task].labels.index(label)]
        grid = int(round(math.sqrt(weights.size)))
        heat = weights.reshape(grid, grid) / max(float(weights.max()), 1e-12)
        heat_image = Image.fromarray(np.uint8(heat * 255)).resize((size, size), Image.Resampling.BILINEAR)
        heat_rgb = np.stack([np.asarray(heat_image)] * 3, -1) * np.array([1.0, 0.35, 0.0])
        blended = (0.45 * np.asarray(chip, float) + 0.55 * heat_rgb).clip(0, 255).astype(np.uint8)
        panel.paste(Image.fromarray(blended), (column * size, 18))
        draw.text((column * size + 4, 2), f"{task}:{label}"[:24], fill=(255, 255, 255))
    return panel
