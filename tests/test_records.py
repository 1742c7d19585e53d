"""TFRecords read without TensorFlow: the framing, the offset index, tf.train.Example, and
every decoded example of a built dataset, each against TensorFlow's own reading."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from fer_jax import datasets, records


def test_tensorflow_reads_our_records_and_we_read_its(tmp_path):
    payloads = [b"", b"a", os.urandom(1000), b"\x00" * 70000]
    ours = str(tmp_path / "ours.tfrecord")
    records.write_records(ours, payloads)
    assert [r.numpy() for r in tf.data.TFRecordDataset(ours)] == payloads  # TF checks the crcs
    theirs = str(tmp_path / "theirs.tfrecord")
    with tf.io.TFRecordWriter(theirs) as w:
        for p in payloads:
            w.write(p)
    f = records.RecordFile(theirs)
    assert len(f) == 4 and [f[i] for i in (3, 0, 2, 1)] == [payloads[i] for i in (3, 0, 2, 1)]
    assert os.path.isfile(theirs + records.INDEX_SUFFIX)   # cached beside the records
    np.testing.assert_array_equal(records.load_index(theirs), f.index)


def test_corrupt_records_are_named_not_returned(tmp_path):
    path = str(tmp_path / "r.tfrecord")
    records.write_records(path, [b"hello", b"world"])
    data = bytearray(open(path, "rb").read())
    data[12 + 2] ^= 1     # a byte of the first record's data
    open(path, "wb").write(bytes(data))
    f = records.RecordFile(path)
    assert f[1] == b"world"
    with pytest.raises(records.CorruptRecord, match="record 0"):
        f[0]
    open(path, "wb").write(bytes(data[:-3]))   # truncated: the index cannot be built
    with pytest.raises(records.CorruptRecord, match="past the end"):
        records.build_index(path)


def test_examples_parse_as_tensorflow_serializes_them():
    ex = tf.train.Example(features=tf.train.Features(feature={
        "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x", b"\x00y"])),
        "f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -1e-30, 3.25])),
        "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[-(2 ** 40), 7])),
    }))
    got = records.parse_example(ex.SerializeToString())
    assert got["b"] == [b"x", b"\x00y"]
    np.testing.assert_array_equal(got["f"], np.float32([0.5, -1e-30, 3.25]))
    np.testing.assert_array_equal(got["i"], [-(2 ** 40), 7])
    back = tf.train.Example.FromString(records.serialize_example(got))
    assert back == ex


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_decoded_example_equals_tfds(tiny_data_dir, split):
    """The TF-free reader finds the split from dataset_info.json and decodes each record
    exactly as tfds.as_dataset does, in the same order."""
    built = datasets.find("synthetic_faces/tiny", tiny_data_dir)
    builder = tfds.builder("synthetic_faces/tiny", data_dir=tiny_data_dir)
    assert built.class_names == builder.info.features["label"].names
    assert built.image_size == builder.info.features["image"].shape[0]
    assert built.num_examples(split) == builder.info.splits[split].num_examples
    source = built.split_source(split)
    reference = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    assert len(source) == len(reference)
    for i, want in enumerate(reference):
        got = datasets.decode(source[i])
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["heatmap"], want["heatmap"][..., 0])
        np.testing.assert_array_equal(got["landmarks"], want["landmarks"])
        assert got["id"] == want["id"].decode()
        for key in ("label", "heatmap_valid", "landmark_source"):
            assert got[key] == want[key], key


def test_jpeg_images_decode_as_tfds_decodes_them():
    """Real datasets store JPEG crops: OpenCV's decoder gives TFDS's pixels."""
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (48, 48, 3), np.uint8), (5, 5), 0)
    rgb[10:20, 5:40] = (250, 20, 30)
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    ok2, png = cv2.imencode(".png", rgb[..., 0])
    assert ok and ok2
    serialized = records.serialize_example({
        "image": [jpeg.tobytes()], "heatmap": [png.tobytes()], "heatmap_valid": [1],
        "label": [3], "landmarks": np.zeros((68, 2), np.float32), "landmark_source": [2],
        "id": [b"x"]})
    got = datasets.decode(serialized)
    feature = tfds.features.Image(shape=(48, 48, 3), encoding_format="jpeg")
    want = feature.decode_example(tf.constant(jpeg.tobytes())).numpy()
    np.testing.assert_array_equal(got["image"], want)
    np.testing.assert_array_equal(got["heatmap"], rgb[..., 0])


def test_unbuilt_dataset_and_unknown_split_name_what_is_missing(tiny_data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="synthetic_faces/small.*is not built"):
        datasets.find("synthetic_faces/small", str(tmp_path))
    with pytest.raises(KeyError, match="valid splits: \\['test', 'train'\\]"):
        datasets.find("synthetic_faces/tiny", tiny_data_dir).num_examples("validation")
