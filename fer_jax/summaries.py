"""TensorBoard scalars written without TensorFlow.

An event file is a TFRecord file (fer_jax.records framing) of `Event` protos:
first one naming the format ("brain.Event:2"), then one per logged step whose
summary holds each scalar as a float tensor with the "scalars" plugin tag, as
tf.summary.scalar writes it. TensorBoard's own protos serialise them; its event
writer is not used because it loads TensorFlow when TensorFlow is installed.
"""
import os
import socket
import time
from typing import Dict, Optional

from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2

from fer_jax import records


class ScalarWriter:
    """Appends scalar summaries to a new event file in `logdir` (a folder or URL)."""

    def __init__(self, logdir: str):
        folder = epath.Path(logdir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
        self.path = folder / name
        self._file: Optional[object] = self.path.open("wb")
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        records.append_records(self._file, [event.SerializeToString()])  # type: ignore[arg-type]
        self._file.flush()  # type: ignore[union-attr]

    def write(self, step: int, scalars: Dict[str, float]) -> None:
        """One event at `step` holding every {tag: value} of `scalars`."""
        summary = summary_pb2.Summary()
        for tag, value in scalars.items():
            summary.value.extend(summary_v2.scalar_pb(tag, float(value)).value)
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # type: ignore[attr-defined]
            self._file = None
