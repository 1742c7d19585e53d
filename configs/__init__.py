"""Configs: one `get_config()` file per run recipe, built from the shared recipes in
`configs.recipes`. Load a file with `--config=configs/NAME.py`; override any field
on the command line (`--config.align.weight=0`)."""
