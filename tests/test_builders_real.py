"""rafdb, affectnet and image_folder builders on small fixtures in the real layouts.

Checks counts, raw -> canonical labels, crops, landmark sources, heatmap
validity, the report, determinism across worker counts, the missing-files
error and the no-op rebuild. Images are 96 px to keep the builds fast.
"""
import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import build, codebook, faces, landmarks
from data_prep.builders import affectnet, features, image_folder, rafdb

try:
    from tests import fixtures_real as fx
except ImportError:  # tests/ on sys.path (pytest's default rootdir insertion)
    import fixtures_real as fx

SIZE = 96
C = {name: i for i, name in enumerate(codebook.EXPRESSIONS)}
SOURCES = features.LANDMARK_SOURCES


def _examples(builder, split):
    """{id: example} of one split, decoded."""
    out = {}
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
        ex["source"] = SOURCES[ex["landmark_source"]]
        out[ex["id"].decode()] = ex
    return out


def _report(builder):
    with open(os.path.join(builder.data_dir, build.REPORT_FILE)) as f:
        return json.load(f)


def _records(data_dir):
    """{file name: bytes} of every TFRecord shard under data_dir."""
    return {os.path.basename(p): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(data_dir, "**", "*.tfrecord*"), recursive=True))}


def _check_face(ex):
    """A real face, centred in the crop, with eyes above nose above mouth."""
    parts = landmarks.region_means(ex["landmarks"])
    assert parts["eyes"][1] < parts["nose"][1] < parts["mouth"][1], ex["id"]
    assert abs(parts["nose"][0] - SIZE / 2) < 0.2 * SIZE, (ex["id"], parts["nose"])
    assert abs(parts["nose"][1] - SIZE / 2) < 0.25 * SIZE, (ex["id"], parts["nose"])


# --- RAF-DB ------------------------------------------------------------------

@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rafdb_manual"))
    fx.write_rafdb(root)
    return root


@pytest.fixture(scope="module")
def rafdb_built(rafdb_root, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("rafdb_w1"))
    config = rafdb.RafdbConfig(name="t96", image_size=SIZE)
    return build.build_dataset("rafdb", data_dir, rafdb_root, workers=1, config=config)


def test_rafdb_counts_labels_sources(rafdb_built):
    train, test = _examples(rafdb_built, "train"), _examples(rafdb_built, "test")
    # train_00004 is corrupt: skipped; the others are kept (the flat one too).
    assert sorted(train) == ["train_00001", "train_00002", "train_00003", "train_00005"]
    assert sorted(test) == ["test_0001", "test_0002"]
    # Raw 4 Happiness, 1 Surprise, 7 Neutral, 3 Disgust, 5 Sadness, 2 Fear.
    expected = {"train_00001": "Happiness", "train_00002": "Surprise", "train_00003": "Neutral",
                "train_00005": "Disgust", "test_0001": "Sadness", "test_0002": "Fear"}
    for key, ex in {**train, **test}.items():
        assert ex["label"] == C[expected[key]], key
        assert ex["image"].shape == (SIZE, SIZE, 3) and ex["heatmap"].shape == (SIZE, SIZE, 1)
    for key in ("train_00001", "train_00002", "train_00003", "test_0001", "test_0002"):
        ex = {**train, **test}[key]
        assert ex["source"] == "dlib", key
        _check_face(ex)
    flat = train["train_00005"]
    assert flat["source"] == "failed" and not flat["heatmap_valid"]
    assert not flat["landmarks"].any() and not flat["heatmap"].any()
    assert not train["train_00003"]["heatmap_valid"]  # Neutral: no AUs
    assert train["train_00001"]["heatmap_valid"] and train["train_00001"]["heatmap"].max() == 255
    grey = test["test_0002"]["image"].astype(int)  # a grey-level file, stored as RGB
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 3


def test_rafdb_crop_is_the_box_enlarged_by_30_percent(rafdb_built):
    ex = _examples(rafdb_built, "train")["train_00001"]
    image, box = fx.variant("orig")
    x0, y0, x1, y1 = faces.square_box(box, faces.FACE_MARGIN)
    expected = cv2.resize(image[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))],
                          (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    # JPEG q95 of the same crop: a few grey levels apart on average.
    assert np.abs(ex["image"].astype(float) - expected).mean() < 4


def test_rafdb_report(rafdb_built):
    report = _report(rafdb_built)
    train = report["splits"]["train"]
    assert train["examples"] == 4 and report["splits"]["test"]["examples"] == 2
    assert train["skipped"] == 1 and "train_00004.jpg" in train["skipped_files"][0]
    assert train["per_class"] == {"Neutral": 1, "Happiness": 1, "Surprise": 1, "Fear": 0,
                                  "Anger": 0, "Disgust": 1, "Sadness": 0}
    assert train["landmark_sources"]["dlib"] == 3 and train["landmark_sources"]["failed"] == 1
    assert train["heatmap_valid"] == 2
    assert report["skipped_files"] == 1 and report["seconds"] > 0


def test_rafdb_same_bytes_for_any_worker_count(rafdb_built, rafdb_root, tmp_path):
    config = rafdb.RafdbConfig(name="t96", image_size=SIZE)
    two = build.build_dataset("rafdb", str(tmp_path), rafdb_root, workers=2, config=config)
    one_records, two_records = _records(rafdb_built.data_dir), _records(two.data_dir)
    assert one_records and one_records.keys() == two_records.keys()
    for name in one_records:
        assert one_records[name] == two_records[name], name


def test_rebuild_is_a_no_op(rafdb_built, rafdb_root):
    records = sorted(glob.glob(os.path.join(rafdb_built.data_dir, "*")))
    stamps = {p: os.stat(p).st_mtime_ns for p in records}
    config = rafdb.RafdbConfig(name="t96", image_size=SIZE)
    again = build.build_dataset("rafdb", os.path.dirname(os.path.dirname(os.path.dirname(
        rafdb_built.data_dir))), rafdb_root, workers=1, config=config)
    assert os.fspath(again.data_dir) == os.fspath(rafdb_built.data_dir)
    assert {p: os.stat(p).st_mtime_ns for p in records} == stamps


def test_rafdb_aligned_cli(rafdb_root, tmp_path):
    """The command line, on the registered `aligned` config (100x100 as shipped)."""
    cmd = [sys.executable, "-m", "data_prep.build", "--dataset=rafdb/aligned",
           f"--manual_dir={rafdb_root}", f"--data_dir={tmp_path}", "--workers=2"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rafdb/aligned train: 4 examples" in run.stdout
    builder = tfds.builder("rafdb/aligned", data_dir=str(tmp_path))
    train = _examples(builder, "train")
    assert train["train_00001"]["image"].shape == (100, 100, 3)
    for key in ("train_00001", "train_00002", "train_00003"):
        assert train[key]["source"] in ("dlib", "fallback_box"), key
    assert train["train_00005"]["source"] == "failed"
    assert _report(builder)["splits"]["train"]["skipped"] == 1


def test_rafdb_missing_files_listed_in_one_error(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build.build_dataset("rafdb", str(tmp_path / "data"), str(manual))
    message = str(err.value)
    for expected in (rafdb.LABEL_FILE, rafdb.ORIGINAL_DIR, rafdb.BOX_DIR, "What to put where"):
        assert expected in message
    assert not (tmp_path / "data" / "rafdb").exists()  # failed before writing anything


# --- AffectNet ---------------------------------------------------------------

@pytest.fixture(scope="module")
def affectnet_csv_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("affectnet_csv"))
    fx.write_affectnet_csv(root)
    return root


def test_affectnet_csv_7_classes(affectnet_csv_root, tmp_path):
    config = affectnet.AffectnetConfig(name="t7", image_size=SIZE)
    builder = build.build_dataset("affectnet", str(tmp_path), affectnet_csv_root, workers=2,
                                  config=config)
    train, test = _examples(builder, "train"), _examples(builder, "test")
    # training.csv: 1 Happy, 2 Sad, 7 Contempt, 8/9/10 dropped, 6 Anger, + a corrupt file.
    assert sorted(ex["label"] for ex in train.values()) == sorted(
        [C["Happiness"], C["Sadness"], C["Anger"]])
    # validation.csv (no header row): 0 Neutral, 3 Surprise, 7 Contempt (dropped).
    assert sorted(ex["label"] for ex in test.values()) == sorted([C["Neutral"], C["Surprise"]])
    for ex in list(train.values()) + list(test.values()):
        assert ex["source"] == "dataset", ex["id"]
        _check_face(ex)
    # Dataset landmarks follow the crop: the face box made square, resized to 96.
    ex = train["100/tra_000.jpg"]
    x0, y0, x1, y1 = faces.square_box(fx.FACE_BOX)
    expected = (fx.astronaut_landmarks() - [round(x0), round(y0)]) * SIZE / (x1 - x0)
    np.testing.assert_allclose(ex["landmarks"], expected, atol=1.5)
    report = _report(builder)["splits"]
    assert report["train"]["dropped"] == {"Contempt (7-class config)": 1, "None": 1,
                                          "Uncertain": 1, "Non-face": 1}
    assert report["train"]["skipped"] == 1 and "corrupt.jpg" in report["train"]["skipped_files"][0]
    assert report["test"]["dropped"] == {"Contempt (7-class config)": 1}
    assert report["train"]["landmark_sources"]["dataset"] == 3


def test_affectnet_csv_8_classes_forced_dlib(affectnet_csv_root, tmp_path):
    config = affectnet.AffectnetConfig(name="t8d", image_size=SIZE, num_classes=8,
                                       force_dlib=True)
    builder = build.build_dataset("affectnet", str(tmp_path), affectnet_csv_root, workers=1,
                                  config=config)
    assert builder.info.features["label"].names[-1] == "Contempt"
    train, test = _examples(builder, "train"), _examples(builder, "test")
    assert sorted(ex["label"] for ex in train.values()) == sorted(
        [C["Happiness"], C["Sadness"], C["Contempt"], C["Anger"]])
    assert sorted(ex["label"] for ex in test.values()) == sorted(
        [C["Neutral"], C["Surprise"], C["Contempt"]])
    assert {ex["source"] for ex in list(train.values()) + list(test.values())} == {"dlib"}
    contempt = [ex for ex in train.values() if ex["label"] == C["Contempt"]][0]
    assert contempt["heatmap_valid"]


def test_affectnet_npy_layout(tmp_path):
    root = str(tmp_path / "manual")
    fx.write_affectnet_npy(root)
    config = affectnet.AffectnetConfig(name="t7", image_size=SIZE)
    builder = build.build_dataset("affectnet", str(tmp_path / "data"), root, workers=1,
                                  config=config)
    train, test = _examples(builder, "train"), _examples(builder, "test")
    assert sorted(train) == ["train_set/0", "train_set/1", "train_set/6"]
    assert [train[k]["label"] for k in sorted(train)] == [C["Happiness"], C["Sadness"], C["Anger"]]
    assert sorted(test) == ["val_set/0", "val_set/1"]
    assert [test[k]["label"] for k in sorted(test)] == [C["Neutral"], C["Surprise"]]
    for ex in list(train.values()) + list(test.values()):
        assert ex["source"] == "dataset"
        _check_face(ex)
    assert not test["val_set/0"]["heatmap_valid"] and test["val_set/1"]["heatmap_valid"]


def test_affectnet_missing_files_lists_both_layouts(tmp_path):
    manual = tmp_path / "manual"
    (manual / "train_set" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        build.build_dataset("affectnet", str(tmp_path / "data"), str(manual))
    message = str(err.value)
    assert "training.csv" in message and "val_set" in message and "Manually_Annotated_Images" in message


# --- image folders -----------------------------------------------------------

def test_image_folder_without_split_level(tmp_path):
    root = str(tmp_path / "faces")
    fx.write_image_folder(root)
    config = image_folder.ImageFolderConfig(name="t96", image_size=SIZE)
    builder = build.build_dataset("image_folder", str(tmp_path / "data"), root, workers=2,
                                  config=config)
    examples = {**_examples(builder, "train"), **_examples(builder, "test")}
    for split in ("train", "test"):
        for key in _examples(builder, split):
            assert image_folder.hashed_split(key) == split, key
    by_folder = {"happy": "Happiness", "Angry": "Anger", "3_surprised": "Surprise",
                 "SADNESS": "Sadness", "neutral": "Neutral"}
    kinds = fx.folder_kinds()
    expected_ids = {stem for stem, kind in kinds.items()
                    if kind != "corrupt" and not stem.startswith("contempt")}
    assert {os.path.splitext(k)[0] for k in examples} == expected_ids
    for key, ex in examples.items():
        assert ex["label"] == C[by_folder[key.split("/")[0]]], key
        if kinds[os.path.splitext(key)[0]] == "flat":
            assert ex["source"] == "failed" and not ex["heatmap_valid"]
        else:
            # Whole photos (512 and 256 px, CMYK, RGBA too): the detected face is cropped.
            assert ex["source"] == "dlib", key
            _check_face(ex)
    report = _report(builder)
    total = sum(s["examples"] for s in report["splits"].values())
    assert total == len(examples) == 10
    dropped = sum(s["dropped"].get("Contempt (7-class config)", 0)
                  for s in report["splits"].values())
    assert dropped == 1
    assert report["skipped_files"] == 1


def test_image_folder_with_split_level_8_classes(tmp_path):
    root = str(tmp_path / "faces")
    fx.write_image_folder(root, split_level=True)
    config = image_folder.ImageFolderConfig(name="t96_8", image_size=SIZE, num_classes=8)
    builder = build.build_dataset("image_folder", str(tmp_path / "data"), root, workers=1,
                                  config=config)
    train, test = _examples(builder, "train"), _examples(builder, "test")
    assert all(k.startswith("train/") for k in train) and all(k.startswith("test/") for k in test)
    assert "train/contempt/contempt_00.jpg" in train
    assert train["train/contempt/contempt_00.jpg"]["label"] == C["Contempt"]
    assert len(train) + len(test) == 11  # 12 files - 1 corrupt; Contempt kept
    assert len(test) == 4


def test_image_folder_bad_class_name_is_one_clear_error(tmp_path):
    root = tmp_path / "faces"
    (root / "happy").mkdir(parents=True)
    (root / "smirking").mkdir()
    with pytest.raises(FileNotFoundError, match="smirking"):
        build.build_dataset("image_folder", str(tmp_path / "data"), str(root))


def test_class_and_split_names_are_forgiving():
    assert image_folder.canonical_class("Happy") == "Happiness"
    assert image_folder.canonical_class("3_surprised") == "Surprise"
    assert image_folder.canonical_class("FEARFUL") == "Fear"
    assert image_folder.canonical_class("angry") == "Anger"
    assert image_folder.canonical_class("disgusted") == "Disgust"
    assert image_folder.canonical_class("sad") == "Sadness"
    assert image_folder.canonical_class("smirk") is None
    assert image_folder.canonical_split("Validation") == "validation"
    assert image_folder.canonical_split("training") == "train"
    shares = [image_folder.hashed_split(f"happy/{i:05d}.jpg") for i in range(2000)]
    assert 0.76 < shares.count("train") / len(shares) < 0.84
    assert image_folder.hashed_split("happy/x.jpg") == image_folder.hashed_split("happy/x.jpg")


# --- a split without a readable image ----------------------------------------

# Six photos of a new user's folder; the hash split sends happy_04.jpg alone to
# "test", and that file is corrupt (checked in the test, not assumed).
SIX_PHOTOS = {"happy_00.jpg": "orig", "happy_01.jpg": "flip", "happy_02.jpg": "small",
              "happy_03.jpg": "rot", "happy_04.jpg": "corrupt", "happy_05.jpg": "orig"}


def test_image_folder_split_with_only_unreadable_files_is_left_out_and_reported(tmp_path):
    """As a new user runs it: the command line on a small folder of photos."""
    root = tmp_path / "faces"
    for name, kind in SIX_PHOTOS.items():
        path = str(root / "happy" / name)
        if kind == "corrupt":
            fx.write_corrupt(path)
        else:
            fx.write_image(path, fx.variant(kind)[0])
    splits = {name: image_folder.hashed_split(f"happy/{name}") for name in SIX_PHOTOS}
    assert [n for n, s in splits.items() if s == "test"] == ["happy_04.jpg"]  # the premise

    cmd = [sys.executable, "-m", "data_prep.build", "--dataset=image_folder/112",
           f"--manual_dir={root}", f"--data_dir={tmp_path / 'data'}", "--workers=1"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # The five readable photos are written; the empty split is not.
    builder = tfds.builder("image_folder/112", data_dir=str(tmp_path / "data"))
    assert list(builder.info.splits) == ["train"]
    train = _examples(builder, "train")
    assert sorted(train) == [f"happy/{n}" for n in sorted(SIX_PHOTOS) if n != "happy_04.jpg"]
    assert {ex["source"] for ex in train.values()} == {"dlib"}
    # Loud in the console: the summary and the log both name the empty split ...
    assert "image_folder/112 train: 5 examples" in run.stdout
    assert ("WARNING: image_folder/112 test: EMPTY, not written (no readable image: "
            "all 1 file(s) unreadable)") in run.stdout, run.stdout
    assert "split 'test' is EMPTY and NOT written" in run.stderr, run.stderr[-3000:]
    assert "happy_04.jpg" in run.stderr
    # ... and so does the report.
    report = _report(builder)
    assert report["empty_splits"] == {"test": "no readable image: all 1 file(s) unreadable"}
    test = report["splits"]["test"]
    assert test["examples"] == 0 and test["skipped"] == 1
    assert "happy_04.jpg" in test["skipped_files"][0]
    assert test["left_out"] == report["empty_splits"]["test"]
    assert test["per_class"]["Happiness"] == 0
    assert report["splits"]["train"]["examples"] == 5 and report["splits"]["train"]["left_out"] is None
    assert report["skipped_files"] == 1


def test_image_folder_with_no_readable_image_at_all_fails_and_writes_nothing(tmp_path):
    root = tmp_path / "faces"
    for name in ("happy_00.jpg", "happy_04.jpg", "happy_05.jpg"):  # train and test both
        fx.write_corrupt(str(root / "happy" / name))
    (root / "happy" / "happy_01.jpg").write_bytes(b"")
    config = image_folder.ImageFolderConfig(name="t96", image_size=SIZE)
    with pytest.raises(ValueError, match=r"none of the 4 images under .* could be read") as err:
        build.build_dataset("image_folder", str(tmp_path / "data"), str(root), workers=1,
                            config=config)
    assert "happy_00.jpg" in str(err.value)
    assert not glob.glob(str(tmp_path / "data" / "**" / "*.tfrecord*"), recursive=True)
    assert not glob.glob(str(tmp_path / "data" / "**" / build.REPORT_FILE), recursive=True)
