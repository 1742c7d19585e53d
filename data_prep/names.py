"""Names of the datasets data_prep builds: checkable without loading TFDS or TensorFlow.

data_prep.builders maps each name to its TFDS builder (and checks it covers this list).
"""
DATASETS = ("synthetic_faces", "rafdb", "affectnet", "image_folder")
