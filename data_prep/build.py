"""`python -m data_prep.build --dataset=NAME[/CONFIG] --data_dir=DIR [--manual_dir=DIR] [--workers=N]`.

Builds one dataset (images, landmarks, AU heatmaps, labels) as TFRecords with
its TFDS builder, on all cores by default, and writes `build_report.json` next
to the records: examples per split and class, landmark sources, skipped files,
seconds. Re-running on a built data_dir does nothing unless --overwrite.

Datasets: synthetic_faces (embedded), rafdb, affectnet (downloaded by hand,
--manual_dir), image_folder (--manual_dir=ROOT of class folders).
"""
import json
import os
import shutil
import time
from typing import Any, Dict, Optional

from absl import app, flags, logging
import tensorflow_datasets as tfds

from data_prep import builders
from data_prep.builders import face_records

REPORT_FILE = "build_report.json"


def _split_name(name: str) -> str:
    base = name.split("/")[0].split(":")[0]
    if base not in builders.BUILDERS:
        raise ValueError(
            f"dataset {name!r} is unknown; valid datasets: {sorted(builders.BUILDERS)} "
            "(optionally with '/CONFIG', e.g. 'synthetic_faces/tiny')")
    return base


def _make_builder(name: str, data_dir: str, workers: Optional[int],
                  config: Optional[tfds.core.BuilderConfig]) -> tfds.core.DatasetBuilder:
    base = _split_name(name)
    cls = builders.BUILDERS[base]
    kwargs: Dict[str, Any] = {"data_dir": data_dir}
    if issubclass(cls, face_records.FaceRecordsBuilder):
        kwargs["workers"] = workers
    if config is not None:
        return cls(config=config, **kwargs)
    return tfds.builder(name, **kwargs)


def build_dataset(
    name: str,
    data_dir: str,
    manual_dir: Optional[str] = None,
    overwrite: bool = False,
    *,
    workers: Optional[int] = None,
    config: Optional[tfds.core.BuilderConfig] = None,
) -> tfds.core.DatasetBuilder:
    """Builds dataset `name` ("synthetic_faces/small", "rafdb", ...) under `data_dir`.

    Args:
      name: NAME or NAME/CONFIG, NAME one of builders.BUILDERS.
      data_dir: root of the TFDS data; the records go to data_dir/NAME/CONFIG/VERSION.
      manual_dir: folder with the hand-downloaded files (rafdb, affectnet) or the
        image_folder ROOT; default data_dir/downloads/manual (TFDS's).
      overwrite: rebuild even if a complete build exists.
      workers: processes preparing records (default: all cores); the records are
        byte-identical for any value.
      config: a custom BuilderConfig instance (e.g. another image_size), used
        instead of NAME's registered config; its name must be new.
    Returns:
      The TFDS builder, ready for `as_dataset`. An existing, complete build is
      reused (nothing is read or written) unless `overwrite`.
    Raises:
      FileNotFoundError: manual files missing (one message listing all of them).
    """
    data_dir = os.path.expanduser(data_dir)
    builder = _make_builder(name, data_dir, workers, config)
    if overwrite and os.path.isdir(builder.data_dir):
        # Rebuild from scratch: TFDS refuses to overwrite a finished version in place.
        shutil.rmtree(builder.data_dir)
        builder = _make_builder(name, data_dir, workers, config)
    if os.path.isdir(builder.data_dir) and builder.info.splits and not overwrite:
        logging.info("%s is already built in %s: nothing to do (--overwrite rebuilds).",
                     name, builder.data_dir)
        return builder
    if manual_dir is None:
        manual_dir = os.path.join(data_dir, "downloads", "manual")
    manual_dir = os.path.expanduser(manual_dir)
    if isinstance(builder, face_records.FaceRecordsBuilder):
        # Fail before TFDS creates any folder, with the full list of what is missing.
        builder.check_manual_dir(manual_dir, builder.builder_config)
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    download_config = tfds.download.DownloadConfig(download_mode=mode, manual_dir=manual_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=download_config)
    seconds = time.perf_counter() - start
    write_report(builder, seconds, manual_dir)
    return builder


def write_report(builder: tfds.core.DatasetBuilder, seconds: float,
                 manual_dir: Optional[str] = None) -> str:
    """Writes <builder.data_dir>/build_report.json; returns its path.

    Per split: examples (as written), per-class counts, landmark sources,
    valid heatmaps, skipped files (with reasons), dropped rows, seconds, and
    `left_out` (why it was not written, else null). `empty_splits`: split ->
    that reason, for the splits that were not written.
    """
    counts = getattr(builder, "build_report", {}) or {}
    splits = {}
    for split, info in builder.info.splits.items():
        entry = {"examples": info.num_examples}
        if split in counts:
            entry.update(counts[split].to_json())
            entry["examples"] = info.num_examples  # what TFDS wrote is the truth
        splits[split] = entry
    for split, c in counts.items():  # splits with no example at all
        splits.setdefault(split, c.to_json())
    report = {
        "dataset": builder.name,
        "config": builder.builder_config.name if builder.builder_config else None,
        "version": str(builder.version),
        "data_dir": os.fspath(builder.data_dir),
        "manual_dir": manual_dir,
        "workers": getattr(builder, "workers", 1),
        "seconds": round(seconds, 2),
        "splits": splits,
        "skipped_files": sum(len(c.skipped_files) for c in counts.values()),
        "empty_splits": empty_splits(builder),
    }
    path = os.path.join(os.fspath(builder.data_dir), REPORT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return path


def empty_splits(builder: tfds.core.DatasetBuilder) -> Dict[str, str]:
    """Split -> why it was not written, for the builder's splits without examples."""
    counts = getattr(builder, "build_report", {}) or {}
    return {split: c.left_out or "no examples" for split, c in counts.items()
            if split not in builder.info.splits}


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags; defined on demand so that importing this module
    (the trainer calls build_dataset) adds no global flags that could clash."""
    flags.DEFINE_string("dataset", "synthetic_faces/small",
                        f"Dataset[/config] to build; one of {sorted(builders.BUILDERS)}.")
    flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "Where the TFRecords are written.")
    flags.DEFINE_string("manual_dir", None,
                        "Folder holding the manually downloaded files (rafdb, affectnet) or "
                        "the ROOT of class folders (image_folder).")
    flags.DEFINE_integer("workers", None, "Processes preparing records (default: all cores).",
                         lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Rebuild even if the dataset is already built.")


def main(argv):
    del argv
    builder = build_dataset(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir, FLAGS.overwrite,
                            workers=FLAGS.workers)
    for split, info in builder.info.splits.items():
        print(f"{FLAGS.dataset} {split}: {info.num_examples} examples in {builder.data_dir}")
    for split, reason in empty_splits(builder).items():
        print(f"WARNING: {FLAGS.dataset} {split}: EMPTY, not written ({reason})")
    report = os.path.join(os.fspath(builder.data_dir), REPORT_FILE)
    if os.path.isfile(report):
        print(f"report: {report}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
