"""TFDS builders of every dataset fer_jax trains on.

Importing this package registers the builders with TFDS, so that
`tfds.builder("synthetic_faces/small", data_dir=DIR)` finds them.
"""
from data_prep import names
from data_prep.builders import affectnet, image_folder, rafdb, synthetic_faces

# Dataset name (the part before "/config") -> builder class.
BUILDERS = {
    "synthetic_faces": synthetic_faces.SyntheticFaces,
    "rafdb": rafdb.Rafdb,
    "affectnet": affectnet.Affectnet,
    "image_folder": image_folder.ImageFolder,
}
assert tuple(BUILDERS) == names.DATASETS, "data_prep.names.DATASETS lists the builders"
