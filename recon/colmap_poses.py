"""Camera poses from COLMAP through pycolmap: the ``--poses colmap`` path of ``scenegrad reconstruct``.

COLMAP's classical pipeline (SIFT features, sequential matching with loop-closure-free windows for
videos or exhaustive matching for small image sets, incremental mapping) with one shared
``SIMPLE_PINHOLE`` camera, so its model is what the rest of scenegrad expects (pinhole, shared
focal length; phone videos are close enough to distortion-free at the resolutions used here).
Frames COLMAP cannot register are left out of the model, and the report says how many.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ColmapPoses", "colmap_poses"]

#: Below this many images every pair is matched; above, each frame is matched to its neighbours.
EXHAUSTIVE_UP_TO = 40


@dataclass
class ColmapPoses:
    """What :func:`colmap_poses` wrote: the model folder, the registered image names and counts."""

    sparse_dir: Path
    registered: list[str]
    total: int
    points: int


def colmap_poses(images_dir: str | Path, sparse_dir: str | Path, *, overlap: int = 10, threads: int = -1
                 ) -> ColmapPoses:
    """Run COLMAP (pycolmap) on the images in ``images_dir`` and write its largest model to
    ``sparse_dir`` (COLMAP binary files; scenegrad's :func:`~scenegrad.datasets.colmap.load_colmap`
    reads it).

    Args:
        images_dir: a folder of images of one size (``scenegrad reconstruct`` writes ``images/``).
        sparse_dir: output folder (created; its model files are replaced).
        overlap: for sequences longer than :data:`EXHAUSTIVE_UP_TO` frames, how many following frames
            each frame is matched with.
        threads: COLMAP's thread count (-1: all cores).

    Raises:
        ImportError: pycolmap is not installed (``pip install scenegrad[peers]``).
        RuntimeError: COLMAP registered fewer than 3 images (it says how many it tried).
    """
    try:
        import pycolmap
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("--poses colmap needs pycolmap: pip install 'scenegrad[peers]'") from error

    images_dir, sparse_dir = Path(images_dir), Path(sparse_dir)
    names = sorted(p.name for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(names) < 3:
        raise RuntimeError(f"{images_dir}: {len(names)} image(s); COLMAP needs at least 3")
    with tempfile.TemporaryDirectory(prefix="scenegrad_colmap_") as tmp:
        root = Path(tmp)
        database = root / "database.db"
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "SIMPLE_PINHOLE"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = threads
        pycolmap.extract_features(database, images_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
        if len(names) <= EXHAUSTIVE_UP_TO:
            pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = overlap
            pycolmap.match_sequential(database, pairing_options=pairing, device=pycolmap.Device.cpu)
        options = pycolmap.IncrementalPipelineOptions()
        options.num_threads = threads
        models = pycolmap.incremental_mapping(database, images_dir, root / "sparse", options=options)
        model = max(models.values(), key=lambda m: m.num_reg_images()) if models else None
        registered = 0 if model is None else model.num_reg_images()
        if model is None or registered < 3:
            raise RuntimeError(f"{images_dir}: COLMAP registered {registered} of {len(names)} images; the frames "
                               "may lack texture or parallax (try --poses flowmap)")
        sparse_dir.mkdir(parents=True, exist_ok=True)
        for stale in sparse_dir.glob("*.bin"):
            stale.unlink()
        model.write(str(sparse_dir))
        reg = sorted(model.images[i].name for i in model.reg_image_ids())
        return ColmapPoses(sparse_dir, reg, len(names), model.num_points3D())
