"""The one way a face enters the store: its image (by sha256), the face row and its embedding,
in one transaction; and the workspace copy of the photo it came from."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.store.database import Store


@dataclass(frozen=True)
class Ingested:
    image_id: int
    image_new: bool
    face_id: int | None  # None: skipped (see ``ingest_face``)


def keep_copy(path: Path, folder: Path, sha256: str, default_suffix: str = "") -> Path:
    """``path`` copied once into ``folder`` as ``<sha256[:16]><suffix>`` (atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{sha256[:16]}{path.suffix.lower() or default_suffix}"
    if not copy.exists():
        tmp = copy.with_name(f".{copy.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(copy)
    return copy


def ingest_face(
    store: Store,
    image: Path | str,
    *,
    sha256: str,
    source: str,
    box: Iterable[int],
    person_id: str | Callable[[], str | None] | None = None,
    landmarks: np.ndarray | None = None,
    quality: dict[str, Any] | None = None,
    status: str = "in_use",
    detector: str | None = "hog",
    meta: dict[str, Any] | None = None,
    embedder_id: str | None = None,
    embedding: np.ndarray | None = None,
    new_image_only: bool = False,
    known: set[tuple[int, Any]] | None = None,
) -> Ingested:
    """Add the image (or find it by ``sha256``), then the face and its embedding (when both
    ``embedder_id`` and ``embedding`` are given), all or nothing. Skipped, with
    ``face_id=None``: an image already stored when ``new_image_only``, or an
    ``(image_id, box)`` already in ``known`` (which gets the new face's pair). A callable
    ``person_id`` is called only when the face is added (e.g. to create the person)."""
    with store.transaction():
        image_id, is_new = store.add_image(image, source=source, sha256=sha256)
        if (new_image_only and not is_new) or (known is not None and (image_id, box) in known):
            return Ingested(image_id, is_new, None)
        face_id = store.add_face(
            image_id,
            person_id=person_id() if callable(person_id) else person_id,
            box=box,
            landmarks=landmarks,
            quality=quality,
            status=status,
            detector=detector,
            meta=meta,
        )
        if embedder_id and embedding is not None:
            store.add_embedding(face_id, embedder_id, embedding)
    if known is not None:
        known.add((image_id, box))
    return Ingested(image_id, is_new, face_id)


def ingest_found_face(store: Store, image: Path | str, face: Any, **kwargs: Any) -> Ingested:
    """``ingest_face`` for a face the engine found (``vision.batch.FoundFace``): its box,
    landmarks, quality, detector and embedding."""
    return ingest_face(
        store,
        image,
        box=face.box,
        landmarks=face.landmarks,
        quality=face.quality,
        detector=face.detector,
        embedding=face.embedding,
        **kwargs,
    )
