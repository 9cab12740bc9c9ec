"""Imaging: preprocessing of calcium movies (sec. 3.1, eq. 23) and segmentation into cells.

- :mod:`calcium_gnn.imaging.preprocess`: hot-pixel median filter, ``log(x + eps)``, IQR eq. (23);
- :mod:`calcium_gnn.imaging.reference`: the reference image (temporal mean / max / std / a frame);
- :mod:`calcium_gnn.imaging.segmentation`: ``segment(image, backend=...)`` and label clean-up.
"""
