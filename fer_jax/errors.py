"""The error every layer of fer_jax may raise: the floor of the import graph (imports nothing).

Registries (models, methods, CAMs, datasets) raise it for an unknown name; the
config checks raise it for a bad value. Here rather than in config_schema, which
reads those registries: a module that checks a name must not import one above it.
"""


class ConfigError(ValueError):
    """A config value (or a name derived from it) is not valid; the message names it.

    The CLIs print the message alone (no traceback) and exit with status 2.
    """
