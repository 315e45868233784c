"""Readers and writers: video, image folders, COLMAP, transforms.json, LLFF, RGB-D, meshes.

Imported as ``scenegrad.datasets`` (the wheel never installs a top-level ``datasets``).
"""
