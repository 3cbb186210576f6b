"""One module per ``scheduler`` subcommand.

Each module has ``register(subparsers)``, which adds its parser and sets ``handler``
to a function taking the parsed arguments and returning the exit code.
"""
