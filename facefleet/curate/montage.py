"""Montages: contact sheets (PNG) of faces for review by eye, one per person, cluster or
status. Each tile is numbered with the face id that ``facefleet label`` takes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from facefleet.errors import FacefleetError, ImageError
from facefleet.fileio import atomic_write_bytes
from facefleet.store import FaceRow, Store

TILE = 128
MAX_COLS = 8
MAX_TILES = 64  # per sheet; more faces make more sheets
MARGIN = 0.25  # context kept around a face box


def grid(n: int, max_cols: int = MAX_COLS) -> tuple[int, int]:
    """(rows, cols) of a sheet holding ``n`` tiles."""
    if n <= 0:
        return 0, 0
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def tile_of(rgb: np.ndarray, box: tuple[int, int, int, int], size: int = TILE) -> np.ndarray:
    """A square tile around ``box`` (with some context), resized to ``size``."""
    import cv2

    h, w = rgb.shape[:2]
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * MARGIN)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    crop = rgb[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else rgb
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)


def number(tile: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` on a dark box in the tile's top-left corner."""
    import cv2

    out = tile.copy()
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    cv2.rectangle(out, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (3, th + 3), font, scale, (255, 255, 0), thick, cv2.LINE_AA)
    return out


def sheet(tiles: list[np.ndarray], max_cols: int = MAX_COLS) -> np.ndarray:
    """Tiles (equal squares, RGB) laid out row by row on a grey background."""
    rows, cols = grid(len(tiles), max_cols)
    size = tiles[0].shape[0]
    out = np.full((rows * size, cols * size, 3), 40, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * size : (r + 1) * size, c * size : (c + 1) * size] = t
    return out


def face_tile(face: FaceRow, size: int = TILE) -> np.ndarray:
    from facefleet.vision.image import load_image

    try:
        rgb = load_image(face.image_path)
        t = tile_of(rgb, face.box, size)
    except (ImageError, OSError):
        t = np.zeros((size, size, 3), dtype=np.uint8)  # a missing image still shows its number
    return number(t, str(face.id))


def write_sheets(
    faces: list[FaceRow], out_dir: Path, stem: str, *, size: int = TILE, per_sheet: int = MAX_TILES
) -> list[Path]:
    """PNG sheets ``<stem>.png`` (``<stem>_2.png``... when more than ``per_sheet`` faces)."""
    import cv2

    paths = []
    for n, start in enumerate(range(0, len(faces), per_sheet), start=1):
        tiles = [face_tile(f, size) for f in faces[start : start + per_sheet]]
        img = sheet(tiles)
        ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if not ok:
            raise FacefleetError("could not encode a montage PNG")
        path = Path(out_dir) / (f"{stem}.png" if n == 1 else f"{stem}_{n}.png")
        atomic_write_bytes(path, png.tobytes())
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "unnamed"


def montages(
    store: Store,
    embedder_id: str,
    out_dir: Path,
    *,
    person: str | None = None,
    cluster: int | None = None,
    status: str | None = None,
) -> list[Path]:
    """Contact sheets: of one person, one cluster, one status (one sheet per person, and one
    for faces without a person), or by default one per open cluster."""
    from facefleet.curate import clusters as cl

    out_dir = Path(out_dir)
    if cluster is not None:
        info = cl.cluster(store, embedder_id, cluster)
        return write_sheets(info.faces, out_dir, f"cluster_{cluster}")
    if person is not None:
        p = store.person(person)
        faces = [
            f for f in store.faces(person=p.id, status=status) if f.status != "revoked" or status == "revoked"
        ]
        if not faces:
            raise FacefleetError(f"no faces of {p.name!r}" + (f" in status {status}" if status else ""))
        return write_sheets(faces, out_dir, _safe(p.name))
    if status is not None:
        faces = store.faces(status=status)
        if not faces:
            raise FacefleetError(f"no faces in status {status}")
        groups: dict[str, list[FaceRow]] = {}
        for f in faces:
            groups.setdefault(f.person_name or f"{status}_unnamed", []).append(f)
        return [p for name, fs in sorted(groups.items()) for p in write_sheets(fs, out_dir, _safe(name))]
    cl.update_clusters(store, embedder_id)
    found = cl.clusters(store, embedder_id)
    if not found:
        raise FacefleetError("no open clusters: collect captures first ('facefleet collect')")
    return [p for c in found for p in write_sheets(c.faces, out_dir, f"cluster_{c.id}")]
