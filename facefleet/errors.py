"""Every failure a user should see as a clear one-line message rather than a traceback."""


class FacefleetError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""


class NoWorkspaceError(FacefleetError):
    """No workspace found where one was expected."""


class ConfigError(FacefleetError):
    """A configuration or version YAML file is missing, malformed or holds bad values."""


class ImageError(FacefleetError):
    """A file could not be read as an image (corrupt, truncated, not an image, too large)."""


class StoreError(FacefleetError):
    """The identity store refused an operation (unknown person, duplicate name, ...)."""


class ModelError(FacefleetError):
    """A face model (weights, converted graph, trained classifier) is missing or unusable."""


class BundleError(FacefleetError):
    """A model bundle failed its signature, a checksum, or its embedder check."""


class DeployError(FacefleetError):
    """A deployment step failed on a host."""
