"""fer_jax.video and `predict --video`: track ids, smoothing, frame sampling, bad files."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import fixtures_real as fx
from fer_jax import errors, predict, video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ["Neutral", "Happiness", "Sadness"]


# --- box overlap and greedy matching --------------------------------------------------

def test_box_iou_by_hand():
    assert video.box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert video.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)   # 1 / (4 + 4 - 1)
    assert video.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert video.box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0                    # edges touch
    assert video.box_iou((0, 0, 2, 2), (5, 5, 6, 6)) == 0.0


def test_each_box_keeps_the_track_it_overlaps_and_strangers_get_new_ids_in_order():
    previous = {0: (0, 0, 10, 10), 1: (20, 0, 30, 10)}
    boxes = [(21, 0, 31, 10), (50, 50, 60, 60), (1, 0, 11, 10), (70, 0, 80, 10)]
    assert video.match_tracks(previous, boxes, next_id=2) == ([1, 2, 0, 3], 4)
    assert video.match_tracks({}, boxes[:2], next_id=5) == ([5, 6], 7)
    assert video.match_tracks(previous, [], next_id=2) == ([], 2)


def test_a_track_goes_to_its_best_overlap_greedily_and_only_once():
    previous = {0: (0, 0, 10, 10)}
    half, shifted = (0, 0, 10, 5), (1, 0, 11, 10)     # IoU 50/100 and 90/110 with the track
    assert video.match_tracks(previous, [half, shifted], next_id=1) == ([1, 0], 2)
    # Two tracks overlap one box: it continues the one it overlaps most.
    previous = {0: (0, 0, 10, 10), 1: (4, 0, 14, 10)}
    boxes = [(3, 0, 13, 10)]                          # IoU 70/130 with 0, 90/110 with 1
    assert video.match_tracks(previous, boxes, next_id=2) == ([1], 2)


def test_overlap_below_the_threshold_starts_a_new_track():
    previous = {0: (0, 0, 10, 10)}
    moved = [(5, 0, 15, 10)]                          # IoU 1/3
    assert video.match_tracks(previous, moved, 1, min_iou=0.3) == ([0], 1)
    assert video.match_tracks(previous, moved, 1, min_iou=0.4) == ([1], 2)


# --- smoothing -------------------------------------------------------------------------

def test_smoothing_is_an_exponential_moving_average_by_hand():
    first = video.smooth(None, [1.0, 0.0], 0.25)      # a new track starts at its frame
    np.testing.assert_allclose(first, [1.0, 0.0])
    second = video.smooth(first, [0.0, 1.0], 0.25)
    np.testing.assert_allclose(second, [0.25, 0.75])
    third = video.smooth(second, [0.5, 0.5], 0.25)
    np.testing.assert_allclose(third, [0.25 * 0.25 + 0.75 * 0.5, 0.25 * 0.75 + 0.75 * 0.5])
    np.testing.assert_allclose(video.smooth(second, [0.0, 1.0], 0.0), [0.0, 1.0])   # off


@pytest.mark.parametrize("every, smoothing, iou, key", [
    (0, 0.0, 0.3, "--every"), (1, 1.0, 0.3, "--smoothing"), (1, -0.1, 0.3, "--smoothing"),
    (1, 0.0, 0.0, "--track_iou"), (1, 0.0, 1.5, "--track_iou")])
def test_bad_options_fail_naming_the_flag(every, smoothing, iou, key):
    with pytest.raises(errors.ConfigError, match=key):
        video.check_options(every, smoothing, iou)


# --- frames through a predictor: sampling, tracks, carried annotations --------------------

class ScriptedPredictor:
    """Stands in for predict.Predictor: one face per frame where `script` gives a box (None:
    no face), with `probs[frame]`; the frame index is read from the pixels it is given."""
    class_names = CLASSES
    cam = "gradcam++"

    def __init__(self, script, probs):
        self.script, self.probs, self.seen = script, probs, []

    def predict_many(self, sources):
        for rgb in sources:
            index = int(rgb[0, 0, 0])
            self.seen.append(index)
            box = self.script[index]
            if box is None:
                yield None, [predict.FaceResult("<array>", None, "no_face", "no face found")]
                continue
            p = dict(zip(CLASSES, self.probs[index]))
            label = max(p, key=p.get)
            yield None, [predict.FaceResult("<array>", 0, "ok", box=box, label=label,
                                            confidence=p[label], probabilities=p)]


def frames(n):
    return [video.Frame(i, i / 10, np.full((40, 60, 3), i, np.uint8)) for i in range(n)]


def test_every_nth_frame_is_analysed_and_the_frames_between_show_its_faces():
    a = (10.0, 10.0, 30.0, 30.0)
    script = {0: a, 2: (11.0, 10.0, 31.0, 30.0), 4: None, 6: a}
    probs = {0: [0.2, 0.8, 0.0], 2: [0.6, 0.4, 0.0], 6: [0.0, 0.0, 1.0]}
    fake = ScriptedPredictor(script, probs)
    out = list(video.analyse(fake, frames(8), every=2, smoothing=0.5))
    assert fake.seen == [0, 2, 4, 6]
    assert [f.frame.index for f in out] == list(range(8))
    assert [f.analysed for f in out] == [True, False] * 4
    for f in out:
        if not f.analysed:   # a skipped frame shows the last analysed frame's faces
            assert f.rows is out[f.frame.index - 1].rows
    tracks = [[r.track for r in out[i].rows] for i in (0, 2, 4, 6)]
    assert tracks == [[0], [0], [None], [1]]   # no re-identification after a frame without
    assert out[4].rows[0].row.status == "no_face"
    # Track 0: 0.5 * (0.2, 0.8, 0) + 0.5 * (0.6, 0.4, 0) at frame 2; track 1 starts afresh.
    second = out[2].rows[0]
    assert second.row.probabilities == pytest.approx(dict(zip(CLASSES, [0.4, 0.6, 0.0])))
    assert (second.row.label, second.raw_label) == ("Happiness", "Neutral")
    assert second.raw_probabilities == pytest.approx(dict(zip(CLASSES, probs[2])))
    assert out[6].rows[0].row.probabilities == pytest.approx(dict(zip(CLASSES, probs[6])))


def test_a_cut_to_another_place_starts_a_new_track():
    script = {0: (0.0, 0.0, 10.0, 10.0), 1: (40.0, 20.0, 50.0, 30.0)}
    probs = {i: [1.0, 0.0, 0.0] for i in script}
    out = list(video.analyse(ScriptedPredictor(script, probs), frames(2)))
    assert [[r.track for r in f.rows] for f in out] == [[0], [1]]


# --- decoding and bad files -------------------------------------------------------------

def write_video(path, images, fourcc="MJPG", fps=10.0):
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for image in images:
        writer.write(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def test_missing_and_undecodable_files_fail_when_opened(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such video file"):
        video.VideoReader(str(tmp_path / "missing.mp4"))
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="cannot decode"):
        video.VideoReader(str(tmp_path / "text.mp4"))


def test_a_truncated_video_yields_what_it_can_and_says_where_it_stopped(tmp_path):
    rng = np.random.default_rng(0)
    path = write_video(tmp_path / "whole.avi",
                       [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(20)])
    data = open(path, "rb").read()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
    whole = video.VideoReader(path)
    assert [f.index for f in whole.frames()] == list(range(20)) and whole.stopped == ""
    cut = video.VideoReader(str(tmp_path / "cut.avi"))
    got = [f.time for f in cut.frames()]
    assert 0 < len(got) < 20 and got == pytest.approx([i / 10 for i in range(len(got))])
    assert f"after frame {len(got) - 1}" in cut.stopped and "20 frames" in cut.stopped


# --- the command line, end to end on the shipped model -----------------------------------

FACE_FRAMES, BLANK_FRAMES, SIDE = 8, 2, 256


def moving_face_video(path):
    """The astronaut's face, the window moving 3 px right and 2 px down per frame, then
    frames of flat grey (no face)."""
    astro = fx.astronaut()
    images = [astro[10 + 2 * i:10 + 2 * i + SIDE, 100 + 3 * i:100 + 3 * i + SIDE]
              for i in range(FACE_FRAMES)]
    images += [np.full((SIDE, SIDE, 3), 120, np.uint8)] * BLANK_FRAMES
    return write_video(path, images), images


def test_cli_tracks_one_face_through_a_video_and_writes_tables_and_an_annotated_copy(tmp_path):
    path, images = moving_face_video(tmp_path / "moving.avi")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fer_jax.predict", f"--video={path}", f"--output={out}",
           "--smoothing=0.5", "--workers=1", "--batch_size=4"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    n = FACE_FRAMES + BLANK_FRAMES
    assert f"{n} frames, {n} analysed: {FACE_FRAMES} faces in 1 tracks" in done.stdout
    rows = [json.loads(line) for line in open(out / "predictions.jsonl")]
    assert [r["frame"] for r in rows] == list(range(n))
    assert [r["time"] for r in rows] == pytest.approx([i / 10 for i in range(n)])
    faces, blanks = rows[:FACE_FRAMES], rows[FACE_FRAMES:]
    assert all(r["status"] == "ok" and r["track"] == 0 for r in faces)
    assert all(r["status"] == "no_face" and r["track"] is None for r in blanks)
    # Smoothed probabilities: the moving average of the model's own, recomputed here.
    past = None
    for r in faces:
        raw = np.array([r["raw_probabilities"][c] for c in sorted(r["raw_probabilities"])])
        past = raw if past is None else 0.5 * past + 0.5 * raw
        assert [r["probabilities"][c] for c in sorted(r["probabilities"])] == \
            pytest.approx(list(past), abs=2e-6)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    with open(out / "predictions.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == n and list(table[0])[:4] == ["frame", "time", "track", "path"]
    assert [t["track"] for t in table] == ["0"] * FACE_FRAMES + [""] * BLANK_FRAMES
    # The annotated copy: every frame, the same size, a green box where the face is.
    capture = cv2.VideoCapture(str(out / video.ANNOTATED))
    annotated = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        annotated.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    assert len(annotated) == n and all(a.shape == (SIDE, SIDE, 3) for a in annotated)
    x0, y0, x1, _ = (int(round(v)) for v in faces[0]["box"])
    edge = annotated[0][y0, x0 + 5:x1 - 5].astype(int)     # the box's top edge
    assert (edge[:, 1] - edge[:, 0]).mean() > 80 and \
        (images[0][y0, x0 + 5:x1 - 5, 1].astype(int) - images[0][y0, x0 + 5:x1 - 5, 0]).mean() < 0


def test_cli_ends_with_one_error_line_on_a_file_that_is_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    cmd = [sys.executable, "-m", "fer_jax.predict", f"--video={bad}", f"--output={tmp_path}/o"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: OpenCV cannot decode this file as a video"]
