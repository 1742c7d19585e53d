"""How every `python -m fer_jax.<tool>` reads its command line: one way to start, one way
to override a config (`--config.GROUP.KEY=VALUE`), one way to report a user's mistake.

Tools that train from a config file (main, benchmark) define `--config=FILE` with
`config_flags.DEFINE_config_file`; tools that reopen configs written elsewhere (evaluate
reads a run's run.json, experiments its grid's cells) define `--config` over the schema's
defaults with `define_config_overrides()` and apply `overrides()` to the config they load.
Both take the same `--config.eval.cam_methods=gradcam,layercam` syntax: a comma-separated
value of a tuple field is split into its items.
"""
import contextlib
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence

import ml_collections

from fer_jax import errors

CONFIG = "config"


def start(argv: Sequence[str]) -> None:
    """Rejects stray positional arguments (a usage error naming them) and logs warnings and
    errors only unless --verbosity is given: orbax and TFDS narrate every step at INFO."""
    from absl import app, flags, logging
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def run(main: Callable[[Sequence[str]], Any]) -> None:
    """`absl.app.run(main)` with a flag parser that turns a bad `--config.a.b` into a usage
    error naming the key and the valid ones (ml_collections raises a bare AttributeError)."""
    from absl import app
    app.run(main, flags_parser=parse_flags)


def parse_flags(argv: Sequence[str]) -> List[str]:
    """absl's flag parsing; an unknown `--config.` key exits 2 with the valid keys."""
    from absl import flags
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as e:
        _usage_error(str(e))
    except (AttributeError, KeyError):
        _check_config_keys(argv)
        raise
    raise AssertionError("unreachable")


def _check_config_keys(argv: Sequence[str]) -> None:
    """Exits 2 naming the first `--config.a.b=v` of `argv` whose key the schema lacks."""
    for arg in argv[1:]:
        if arg.startswith(f"--{CONFIG}.") and (message := _unknown_key(arg)) is not None:
            _usage_error(message)


def _unknown_key(arg: str) -> "str | None":
    """A message if `--config.a.b=v` names a key the schema lacks, else None."""
    from fer_jax import config_schema
    key = arg.split("=", 1)[0][len(CONFIG) + 3:]
    try:
        config_schema.field_at(key)
    except errors.ConfigError as e:
        return f"--{CONFIG}.{key}: {e}"
    return None


def _usage_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def define_config_overrides(help_text: str) -> None:
    """`--config.GROUP.KEY=VALUE` overrides for a tool whose config comes from elsewhere
    (a run's run.json, a grid's cells): typed and checked against the schema's defaults."""
    from ml_collections import config_flags
    from fer_jax import config_schema
    # config_flags reads the overrides in sys.argv here, at definition, not at parsing.
    _check_config_keys(sys.argv)
    config_flags.DEFINE_config_dict(CONFIG, config_schema.defaults(), help_text,
                                    lock_config=True)


def overrides() -> Dict[str, Any]:
    """The `--config.a.b=v` given on the command line, as {"a.b": v}; a tuple field's
    comma-separated items are split ("gradcam,layercam" -> ("gradcam", "layercam"))."""
    from absl import flags
    from ml_collections import config_flags
    values = config_flags.get_override_values(flags.FLAGS[CONFIG])
    return {k: _split_items(v) for k, v in values.items()}


def config() -> ml_collections.ConfigDict:
    """The `--config=FILE` config with its overrides, tuple items split as in overrides()."""
    from absl import flags
    out = flags.FLAGS[CONFIG].value
    return apply_overrides(out, overrides()) if out is not None else out


def apply_overrides(config: ml_collections.ConfigDict, values: Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
    """`config` with {"a.b": v} set in place; a key the config lacks is a ConfigError naming
    it and the valid keys at that level. Lists become tuples (as a config file writes them)."""
    for key, value in values.items():
        *groups, field = key.split(".")
        node = config
        for group in groups:
            if group not in node or not hasattr(node[group], "keys"):
                raise errors.ConfigError(f"override {key}={value!r}: no config group {group!r}; "
                                         f"valid keys: {sorted(node.keys())}")
            node = node[group]
        if field not in node:
            raise errors.ConfigError(f"override {key}={value!r}: unknown key {field!r}; "
                                     f"valid keys: {sorted(node.keys())}")
        node[field] = tuple(value) if isinstance(value, list) else value
    return config


def _split_items(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(item.strip() for v in value
                     for item in (v.split(",") if isinstance(v, str) else [v])
                     if not isinstance(item, str) or item.strip())
    return value


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A bad value or a missing file is the user's to fix: one line on stderr, exit 2, no
    traceback (ConfigError, FileNotFoundError)."""
    try:
        yield
    except (errors.ConfigError, FileNotFoundError) as e:
        _usage_error(str(e))
