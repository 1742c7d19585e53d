"""TFRecord files read and written without TensorFlow: framing, offset index, tf.train.Example.

A TFRecord file is a sequence of records, each framed as
  length (uint64 little-endian) | masked crc32c of length (uint32) | data | masked crc32c of data
(tensorflow/core/lib/io/record_writer.cc). `RecordFile` reads record i at once through an
offset index (the start and length of each record's data), built by one pass over the
framing and cached beside the file as FILE.offsets.npy, or kept in memory when the
folder is read-only. `parse_example` decodes a serialized `tf.train.Example` with
protobuf and this module's own copy of its message descriptors (TensorBoard ships
no example.proto, and the one in TensorFlow's wheel would load TensorFlow).
"""
import os
import struct
from typing import BinaryIO, Dict, Iterable, Iterator, List, Optional, Union

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

INDEX_SUFFIX = ".offsets.npy"
_HEADER = 12      # length (8 bytes) + its masked crc (4)
_FOOTER = 4       # masked crc of the data
_MASK_DELTA = 0xA282EAD8


class CorruptRecord(ValueError):
    """A TFRecord file whose framing or checksums are wrong (names the file and offset)."""


def masked_crc(data: bytes) -> int:
    """TFRecord's masked crc32c: the CRC rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def write_records(path: str, records: Iterable[bytes]) -> None:
    """Writes `records` to a new TFRecord file at `path` (uncompressed)."""
    with open(path, "wb") as f:
        append_records(f, records)


def append_records(f: BinaryIO, records: Iterable[bytes]) -> None:
    """Appends framed `records` to the open binary file `f`."""
    for data in records:
        length = struct.pack("<Q", len(data))
        f.write(length + struct.pack("<I", masked_crc(length)) + data
                + struct.pack("<I", masked_crc(data)))


def build_index(path: str) -> np.ndarray:
    """(N, 2) int64 (offset of the data, its length) of every record of a TFRecord file.

    Reads only the 12-byte headers (the length and its checksum are verified) and
    seeks over the data; raises CorruptRecord on a bad header or a truncated file.
    """
    size = os.path.getsize(path)
    rows: List[tuple] = []
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            header = f.read(_HEADER)
            if len(header) < _HEADER:
                raise CorruptRecord(f"{path}: truncated record header at byte {pos}")
            length, = struct.unpack("<Q", header[:8])
            if struct.unpack("<I", header[8:])[0] != masked_crc(header[:8]):
                raise CorruptRecord(f"{path}: bad length checksum at byte {pos}")
            end = pos + _HEADER + length + _FOOTER
            if end > size:
                raise CorruptRecord(f"{path}: record at byte {pos} runs past the end")
            rows.append((pos + _HEADER, length))
            pos = end
            f.seek(pos)
    return np.array(rows, np.int64).reshape(-1, 2)


def load_index(path: str) -> np.ndarray:
    """The offset index of `path`: read from PATH.offsets.npy when it is at least as new
    as the file, else built (build_index) and saved there (skipped if not writable)."""
    cached = path + INDEX_SUFFIX
    try:
        if os.path.getmtime(cached) >= os.path.getmtime(path):
            return np.load(cached)
    except (OSError, ValueError):
        pass   # no cache yet, or an unreadable one: rebuild
    index = build_index(path)
    tmp = f"{cached}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, index)
        os.replace(tmp, cached)   # atomic: processes building it at once never see half a file
    except OSError:
        pass   # a read-only dataset folder: keep the index in memory only
    return index


class RecordFile:
    """Random access to the records of one TFRecord file (opened lazily, so that an
    instance pickled to a worker process opens its own handle)."""

    def __init__(self, path: str, index: Optional[np.ndarray] = None,
                 verify: bool = True):
        """verify: check each record's data checksum as it is read (as TensorFlow does)."""
        self.path = path
        self.index = load_index(path) if index is None else index
        self.verify = verify
        self._fd: Optional[int] = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __getitem__(self, i: int) -> bytes:
        offset, length = (int(v) for v in self.index[i])
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        chunk = os.pread(self._fd, length + _FOOTER, offset)
        data = chunk[:length]
        if len(chunk) != length + _FOOTER or (
                self.verify and struct.unpack("<I", chunk[length:])[0] != masked_crc(data)):
            raise CorruptRecord(f"{self.path}: bad data checksum of record {i} "
                                f"(byte {offset - _HEADER})")
        return data

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self)):
            yield self[i]

    def __del__(self, _close=os.close):   # bound now: at interpreter exit `os` may be gone
        if self._fd is not None:
            _close(self._fd)


# --- tf.train.Example --------------------------------------------------------

def _example_pool() -> descriptor_pool.DescriptorPool:
    """tensorflow/core/example/{feature,example}.proto as descriptors, in a private pool
    (so that TensorFlow's own registration, where it is loaded too, never clashes)."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="fer_jax/tf_example.proto", package="tensorflow", syntax="proto3")

    def message(name: str, *fields: tuple) -> descriptor_pb2.DescriptorProto:
        m = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name, oneof in fields:
            fd = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                fd.type_name = type_name
            if oneof is not None:
                fd.oneof_index = oneof
        return m

    repeated, optional = f.LABEL_REPEATED, f.LABEL_OPTIONAL
    message("BytesList", ("value", 1, f.TYPE_BYTES, repeated, None, None))
    message("FloatList", ("value", 1, f.TYPE_FLOAT, repeated, None, None))
    message("Int64List", ("value", 1, f.TYPE_INT64, repeated, None, None))
    feature = message("Feature",
                      ("bytes_list", 1, f.TYPE_MESSAGE, optional, ".tensorflow.BytesList", 0),
                      ("float_list", 2, f.TYPE_MESSAGE, optional, ".tensorflow.FloatList", 0),
                      ("int64_list", 3, f.TYPE_MESSAGE, optional, ".tensorflow.Int64List", 0))
    feature.oneof_decl.add(name="kind")
    features = message("Features", ("feature", 1, f.TYPE_MESSAGE, repeated,
                                    ".tensorflow.Features.FeatureEntry", None))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=optional,
                    type_name=".tensorflow.Feature")
    message("Example", ("features", 1, f.TYPE_MESSAGE, optional, ".tensorflow.Features", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool


Example = message_factory.GetMessageClass(
    _example_pool().FindMessageTypeByName("tensorflow.Example"))

Value = Union[List[bytes], np.ndarray]


def parse_example(serialized: bytes) -> Dict[str, Value]:
    """A serialized tf.train.Example -> {key: list of bytes, or a 1-D float32 / int64 array}."""
    out: Dict[str, Value] = {}
    for key, feature in Example.FromString(serialized).features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = list(feature.bytes_list.value)
        elif kind == "float_list":
            out[key] = np.array(feature.float_list.value, np.float32)
        elif kind == "int64_list":
            out[key] = np.array(feature.int64_list.value, np.int64)
        else:
            out[key] = np.zeros(0, np.float32)   # an empty feature (no kind set)
    return out


def serialize_example(features: Dict[str, Value]) -> bytes:
    """{key: list of bytes, or float / integer values} -> a serialized tf.train.Example."""
    ex = Example()
    for key, value in features.items():
        feature = ex.features.feature[key]
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
            feature.bytes_list.value.extend(value)
            continue
        array = np.asarray(value).reshape(-1)
        if np.issubdtype(array.dtype, np.floating):
            feature.float_list.value.extend(array.tolist())
        else:
            feature.int64_list.value.extend(array.astype(np.int64).tolist())
    return ex.SerializeToString()
