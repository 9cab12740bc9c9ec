"""Render a synthetic culture as a fluorescence movie (T, Y, X) uint16.

Per frame ``n`` (time ``t_n``), in photoelectrons:

1. cytoplasm of cell ``i``: the dye response ``F(c) = F_min + (F_max - F_min) c / (c + K_d)`` of its
   calcium level ``c = c_i(t_n)`` (monotone, saturating); membrane pixels (label 0): ``F_membrane``;
2. optical blur: a Gaussian point-spread function of standard deviation ``blur_sigma`` px;
3. photobleaching: times ``exp(-t_n / bleach_time)``;
4. noise, scaled by ``noise`` (0 = noiseless): ``lam + noise * (Poisson(lam) - lam)`` shot noise plus
   ``noise * read_noise * N(0, 1)`` read noise (Poisson drawn via its normal approximation where
   ``lam > poisson_normal_above``);
5. camera: ``gain`` ADU per photoelectron plus ``offset`` ADU, rounded and clipped to uint16;
6. hot pixels: the listed ``(frame, y, x)`` pixels are set to ``hot_value`` ADU.

Everything is vectorised over chunks of frames, so a 361 x 512 x 512 movie takes seconds: steps
1-3 are linear in the per-label levels, so a frame is one sparse product with the precomputed
blurred label indicators (:func:`blur_operator`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from calcium_gnn.errors import ConfigError

UINT16_MAX = np.iinfo(np.uint16).max


def dye_response(c: np.ndarray, f_min: float, f_max: float, k_d: float) -> np.ndarray:
    """Fluorescence ``F_min + (F_max - F_min) c / (c + K_d)`` of calcium level ``c`` (>= 0 assumed)."""
    c = np.maximum(c, 0.0)
    return f_min + (f_max - f_min) * c / (c + k_d)


def bleaching(t: np.ndarray, bleach_time: float) -> np.ndarray:
    """Photobleaching factor ``exp(-t / bleach_time)`` at times ``t`` (T,) in s; a huge value = none."""
    return np.exp(-np.asarray(t, dtype=float) / bleach_time)


def draw_hot_pixels(
    n_frames: int,
    size: int,
    rng: np.random.Generator,
    *,
    hot_frames: int = 4,
    hot_pixels_per_frame: tuple[int, int] = (1, 3),
) -> np.ndarray:
    """Random hot pixels: (H, 3) int64 rows ``(frame, y, x)``, sorted.

    Args:
        n_frames: T; size: image side (px); rng: the random generator.
        hot_frames: number of distinct frames that get hot pixels (at most ``n_frames``).
        hot_pixels_per_frame: inclusive range of the number of hot pixels in each such frame.
    """
    if hot_frames < 0:
        raise ConfigError("hot_frames", f"must be >= 0, got {hot_frames}")
    frames = np.sort(rng.choice(n_frames, size=min(hot_frames, n_frames), replace=False))
    low, high = hot_pixels_per_frame
    counts = rng.integers(low, high + 1, size=len(frames))
    rows = np.repeat(frames, counts)
    positions = rng.integers(0, size, size=(len(rows), 2))
    hot = np.column_stack([rows, positions]).astype(np.int64)
    return np.unique(hot, axis=0) if len(hot) else hot.reshape(0, 3)


def blur_operator(labels: np.ndarray, blur_sigma: float, truncate: float = 4.0) -> sp.csr_matrix:
    """The blurred label image as a sparse (Y*X, N+1) matrix ``P``: ``blur(lut[labels]) = P @ lut``.

    Column ``L`` is the Gaussian blur (standard deviation ``blur_sigma`` px, ``mode="nearest"``
    at the image border, kernel cut at ``truncate`` standard deviations as in
    ``scipy.ndimage.gaussian_filter``) of the indicator of label ``L``, computed in the label's
    bounding box padded by the kernel radius. Blurring is linear, so every frame is one sparse
    product instead of a convolution; each pixel sees only the few labels within the kernel radius.
    """
    height, width = labels.shape
    n_labels = int(labels.max()) + 1
    if blur_sigma <= 0:
        pixels = np.arange(labels.size)
        return sp.csr_matrix((np.ones(labels.size), (pixels, labels.ravel())), shape=(labels.size, n_labels))
    radius = int(truncate * blur_sigma + 0.5)
    rows, cols, values = [], [], []
    for label, box in enumerate(ndimage.find_objects(labels + 1)):
        if box is None:
            continue
        y0, y1 = max(box[0].start - radius, 0), min(box[0].stop + radius, height)
        x0, x1 = max(box[1].start - radius, 0), min(box[1].stop + radius, width)
        indicator = (labels[y0:y1, x0:x1] == label).astype(float)
        blurred = ndimage.gaussian_filter(indicator, blur_sigma, mode="nearest", truncate=truncate)
        yy, xx = np.nonzero(blurred > 0)
        rows.append((yy + y0) * width + (xx + x0))
        cols.append(np.full(len(yy), label))
        values.append(blurred[yy, xx])
    return sp.csr_matrix(
        (np.concatenate(values).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(labels.size, n_labels),
    )


def render_movie(
    labels: np.ndarray,
    traces: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
    *,
    hot_pixels: np.ndarray | None,
    f_min: float,
    f_max: float,
    k_d: float,
    f_membrane: float,
    blur_sigma: float,
    bleach_time: float,
    noise: float,
    read_noise: float,
    gain: float,
    offset: float,
    hot_value: int,
    poisson_normal_above: float,
    chunk_frames: int = 16,
) -> np.ndarray:
    """Render the fluorescence movie of a culture.

    The imaging parameters have no defaults here: :func:`calcium_gnn.data.synthetic.make_culture`
    holds them (one source of truth).

    Args:
        labels: (Y, X) label image, 0 = membrane, ``i + 1`` = cell ``i``.
        traces: (N, T) clean calcium levels, row ``i`` for label ``i + 1``.
        t: (T,) frame times in s (for the bleaching).
        rng: the random generator for the noise.
        hot_pixels: (H, 3) ``(frame, y, x)`` to set to ``hot_value``; ``None`` = none.
        f_min, f_max: dye fluorescence (photoelectrons) at zero and saturating calcium.
        k_d: dye dissociation constant, in calcium units (the level of half saturation).
        f_membrane: fluorescence of membrane pixels (photoelectrons): dimmer than any cytoplasm.
        blur_sigma: Gaussian PSF standard deviation in px (0 = no blur).
        bleach_time: photobleaching time constant in s (3e5 s loses 1.2% in an hour).
        noise: imaging noise multiplier (1 = Poisson shot noise + read noise; 0 = noiseless, only
            the rounding to integers remains).
        read_noise: camera read noise standard deviation (photoelectrons) at ``noise = 1``.
        gain: ADU per photoelectron; offset: camera offset in ADU.
        hot_value: ADU of a hot pixel.
        poisson_normal_above: shot noise is drawn exactly from the Poisson law where the mean
            ``lam`` is at most this, and from its normal approximation ``N(lam, lam)`` above (skewness
            ``1/sqrt(lam)`` < 0.15; 3x faster). a huge value (1e9) = always exact.
        chunk_frames: frames rendered at once (memory vs speed).

    Returns:
        (T, Y, X) uint16 movie.
    """
    n_cells, n_frames = traces.shape
    if labels.max() > n_cells:
        raise ConfigError("labels", f"label {labels.max()} but only {n_cells} traces")
    if noise < 0:
        raise ConfigError("noise", f"must be >= 0, got {noise}")
    if chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {chunk_frames}")
    bleach = bleaching(t, bleach_time)
    cell_f = dye_response(traces, f_min, f_max, k_d)
    lut = np.vstack([np.full((1, n_frames), f_membrane), cell_f]).astype(np.float32)  # (N+1, T)
    lut *= bleach[None, :].astype(np.float32)
    movie = render_levels(
        labels,
        lut,
        rng,
        blur_sigma=blur_sigma,
        noise=noise,
        read_noise=read_noise,
        gain=gain,
        offset=offset,
        poisson_normal_above=poisson_normal_above,
        chunk_frames=chunk_frames,
    )
    if hot_pixels is not None and len(hot_pixels):
        movie[hot_pixels[:, 0], hot_pixels[:, 1], hot_pixels[:, 2]] = hot_value
    return movie


def render_levels(
    labels: np.ndarray,
    lut: np.ndarray,
    rng: np.random.Generator,
    *,
    blur_sigma: float,
    noise: float,
    read_noise: float,
    gain: float,
    offset: float,
    poisson_normal_above: float,
    chunk_frames: int = 16,
) -> np.ndarray:
    """Steps 2, 4 and 5 of the module docstring for given noiseless per-label levels.

    Frame ``n`` is ``camera(noise(blur(lut[labels, n])))``: the label image ``labels`` (Y, X) with
    values ``0..L-1`` is painted with the photon levels ``lut`` (L, T) (bleaching already applied),
    blurred (:func:`blur_operator`), given shot and read noise and turned into ADU (arguments as in
    :func:`render_movie`).

    Returns:
        (T, Y, X) uint16 movie.
    """
    if chunk_frames < 1:
        raise ConfigError("chunk_frames", f"must be >= 1, got {chunk_frames}")
    n_frames = lut.shape[1]
    psf = blur_operator(labels, blur_sigma)
    movie = np.empty((n_frames,) + labels.shape, dtype=np.uint16)
    for start in range(0, n_frames, chunk_frames):
        stop = min(start + chunk_frames, n_frames)
        photons = np.ascontiguousarray((psf @ lut[:, start:stop]).T).reshape((stop - start,) + labels.shape)
        if noise > 0:
            photons = _add_noise(photons, rng, noise, read_noise, poisson_normal_above)
        adu = photons * np.float32(gain) + np.float32(offset)
        np.clip(np.rint(adu, out=adu), 0, UINT16_MAX, out=adu)
        movie[start:stop] = adu
    return movie


def _add_noise(
    photons: np.ndarray, rng: np.random.Generator, noise: float, read_noise: float, normal_above: float
) -> np.ndarray:
    """``lam + noise * (shot - lam) + noise * read_noise * N(0, 1)`` for a chunk of mean photon counts.

    Where ``lam > normal_above`` the shot and read noise are one normal draw of variance
    ``noise**2 * (lam + read_noise**2)``; elsewhere the shot noise is an exact Poisson draw.
    """
    exact = photons <= normal_above
    variance = np.float32(read_noise**2) + np.where(exact, np.float32(0.0), photons)
    deviation = np.sqrt(variance) * rng.standard_normal(photons.shape, dtype=np.float32)
    if exact.any():
        lam = photons[exact]
        deviation[exact] += rng.poisson(lam).astype(np.float32) - lam
    return photons + np.float32(noise) * deviation
