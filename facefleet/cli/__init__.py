"""The ``facefleet`` command: a thin argparse front-end over the library API.

Each command group lives in its own module with ``register(subparsers)``; a command's
``func(args)`` calls the library and prints. ``FacefleetError`` becomes a one-line message
and exit status 2.
"""
