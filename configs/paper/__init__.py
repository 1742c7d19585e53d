"""The paper's Table 1 rows of the training-time CAM methods: `<dataset>_<method>.py`.

Each is the dataset's paper config (configs/rafdb_resnet50.py, affectnet_resnet50.py,
rafdb_deit_small.py) with one method switched on by `recipes.with_method`:
  python -m fer_jax.main --config=configs/paper/rafdb_wildcat.py --workdir=DIR \
      --config.dataset.data_dir=DIR --config.init_from=resnet50.safetensors
(`--config.align.weight=0` gives the row's "without AU" column.)
"""
