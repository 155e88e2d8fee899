"""FaceAnalyzer on real photos: conventions of every output, batching, video, verification."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from qface.analyzer import FaceAnalyzer, to_dataframe
from qface.cli import SAMPLE_IMAGE
from qface.pipeline import detect


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(detector="dlib-hog", attention=True)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut_face(analyzer, astronaut):
    faces = analyzer.analyze(astronaut)
    assert faces, "the bundled sample has a face"
    return max(faces, key=lambda face: face.score)


def test_the_sample_face_comes_with_every_output_in_its_convention(analyzer, astronaut_face):
    face = astronaut_face.to_dict()
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 200  # her face, in original-image pixels
    assert 0 <= face["score"] <= 1
    assert face["model"] == analyzer.model.model_id
    assert sum(face["expression"].values()) == pytest.approx(1, abs=1e-3)
    assert face["top_expression"] == max(face["expression"], key=face["expression"].get)
    assert list(face["expression"]) == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
    assert list(face["action_units"])[:3] == ["AU01", "AU02", "AU04"]
    assert len(face["attributes"]) == 40 and list(face["attributes"])[20] == "Male"
    assert 0 <= face["age"] <= 100
    assert set(face["pose"]) == {"pitch", "yaw", "roll"}
    assert len(face["landmarks"]) == 68
    assert np.linalg.norm(face["embedding"]) == pytest.approx(1, abs=1e-4)
    left_eye, right_eye, nose, left_mouth, right_mouth = face["points"]
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]  # "left" as seen in the image
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert "chip" not in face and "attention" not in face


def test_an_image_without_a_face_gives_an_empty_list(analyzer):
    assert analyzer.analyze(np.full((240, 320, 3), 127, np.uint8)) == []


def test_a_list_of_images_gives_a_list_of_face_lists_from_one_network_pass(analyzer, astronaut, monkeypatch):
    calls = []
    forward = analyzer.model.forward
    monkeypatch.setattr(analyzer.model, "forward", lambda x, *a, **k: calls.append(len(x)) or forward(x, *a, **k))
    results = analyzer.analyze_batch([astronaut, np.zeros((64, 64, 3), np.uint8), astronaut])
    assert [len(faces) for faces in results] == [len(results[0]), 0, len(results[0])]
    faces = 2 * len(results[0])
    assert calls[0] >= faces and sum(calls) == 2 * faces  # all faces in one call (their mirror images too, or next)
    assert results[0][0].to_dict() == results[2][0].to_dict()
    with pytest.raises(TypeError, match="analyze_batch"):
        analyzer.analyze([astronaut])


def test_bgr_arrays_are_accepted_when_said_so(analyzer, astronaut, astronaut_face):
    faces = analyzer.analyze(np.ascontiguousarray(astronaut[..., ::-1]), bgr=True)
    best = max(faces, key=lambda face: face.score)
    assert best.box == astronaut_face.box and best.age == astronaut_face.age


def test_roll_follows_the_image_rotation_clockwise_positive(analyzer, astronaut, astronaut_face):
    """Rotating the photo 20° clockwise (as the viewer sees it) must raise roll by about 20°."""
    rotated = np.asarray(Image.fromarray(astronaut).rotate(-20, resample=Image.Resampling.BICUBIC, expand=True))
    face = max(analyzer.analyze(rotated), key=lambda f: f.score)
    assert face.pose["roll"] - astronaut_face.pose["roll"] == pytest.approx(20, abs=4)


def test_yaw_changes_sign_on_the_mirror_image(analyzer, astronaut):
    if analyzer.model.config.version == "untrained":
        pytest.skip("needs the trained default model (qface/weights)")
    turned = shared_path("data", "celeba", "img_align_celeba", "164794.jpg")  # nose toward the image's right
    image = np.asarray(Image.open(turned).convert("RGB"))
    yaw = analyzer.analyze(image)[0].pose["yaw"]
    mirrored_yaw = analyzer.analyze(np.ascontiguousarray(image[:, ::-1]))[0].pose["yaw"]
    assert yaw > 15 and mirrored_yaw < -15


def test_compare_calls_the_same_face_the_same_person(analyzer, astronaut_face):
    verdict = analyzer.compare(astronaut_face, astronaut_face)
    assert verdict["distance"] == 0 and verdict["same_person"]


def test_attention_maps_are_kept_per_face_and_task(analyzer, astronaut_face):
    maps = astronaut_face.attention
    assert maps["expression"].shape[:2] == (analyzer.model.config.decoder_layers, 8)
    np.testing.assert_allclose(maps["attributes"].sum(-1), 1, atol=1e-4)


def test_video_frames_stream_with_their_index_and_time(analyzer, astronaut, tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for _ in range(7):
        writer.write(np.ascontiguousarray(astronaut[..., ::-1]))
    writer.release()
    analyzer.batch_size = 2
    frames = list(analyzer.analyze_video(path, stride=3))
    assert [f.index for f in frames] == [0, 3, 6]
    assert frames[1].seconds == pytest.approx(0.3)
    assert all(f.faces for f in frames)


def test_dataframe_has_one_row_per_face(analyzer, astronaut):
    pytest.importorskip("pandas")
    frame = to_dataframe(analyzer.analyze_batch([astronaut]), ["astronaut.png"])
    assert {"expression.happy", "pose.yaw", "box.x1", "landmarks.67.y"} <= set(frame.columns)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_same_face_and_answers(analyzer, astronaut_face, orientation):
    from test_io import with_orientation

    encoded = with_orientation(Image.open(SAMPLE_IMAGE).convert("RGB"), orientation, fmt="PNG")
    face = max(analyzer.analyze(encoded), key=lambda f: f.score)
    assert face.box == astronaut_face.box
    assert face.top_expression == astronaut_face.top_expression
    assert face.age == pytest.approx(astronaut_face.age, abs=0.01)
    assert face.attributes == pytest.approx(astronaut_face.attributes, abs=1e-3)


def test_the_public_api_is_three_names_and_one_call(analyzer, monkeypatch):
    import qface
    from qface.analyzer import load_model
    from qface.pipeline.results import Face

    assert (qface.FaceAnalyzer, qface.Face, qface.load_model) == (FaceAnalyzer, Face, load_model)
    monkeypatch.delenv("QFACE_YUNET_MODEL", raising=False)  # "auto" is then dlib-hog, like the fixture
    monkeypatch.setattr(detect, "has_libfacedetection", lambda: False)
    faces = qface.analyze(SAMPLE_IMAGE)
    assert [face.to_dict() for face in faces] == [face.to_dict() for face in analyzer.analyze(SAMPLE_IMAGE)]


def test_bf16_precision_gives_the_same_reading_of_the_sample_face_and_a_bad_precision_is_refused(astronaut_face):
    fast = FaceAnalyzer(detector="dlib-hog", precision="bf16")
    face = max(fast.analyze(SAMPLE_IMAGE), key=lambda f: f.score)
    assert face.box == astronaut_face.box and face.top_expression == astronaut_face.top_expression
    assert face.age == pytest.approx(astronaut_face.age, abs=1.0)
    assert np.dot(face.embedding, astronaut_face.embedding) > 0.999  # verification is unchanged
    with pytest.raises(ValueError, match="precision"):
        FaceAnalyzer(detector="none", precision="int4")
