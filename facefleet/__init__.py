"""facefleet: train face-recognition models on a small server, run them on a fleet of edge cameras.

Stages (one sub-package each): vision, store, train, registry, fleet, edge, web, curate.
"""

__version__ = "0.1.0"
