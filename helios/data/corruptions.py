"""MNIST-C corruptions (Mu & Gilmer 2019, google-research/mnist-c) on uint8 (N, 28, 28) digit arrays.

``CORRUPTIONS`` are the 15 of the MNIST-C benchmark, each at the single severity the benchmark fixed (the default
severity of the original function), re-implemented with numpy/scipy (the original uses scikit-image, OpenCV and
ImageMagick). Where the original has a quirk it is kept and said so: glass blur smooths vertically only, translate
always moves 3 px diagonally, motion blur is ImageMagick's one-sided kernel. ``DEV_CORRUPTIONS`` are others from
the MNIST-C candidate list, kept apart for tuning so the 15 benchmark ones stay held out. Every function takes
images and a numpy Generator and returns new uint8 images.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from scipy import ndimage

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]
SIZE = 28
CENTER = 13.5


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 the way MNIST-C stored its float32 0-255 arrays (clip, then truncate)."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _gaussian(x: np.ndarray, sigma: float, axes=(1, 2), mode: str = "nearest") -> np.ndarray:
    """skimage.filters.gaussian per image (batch axis 0 untouched)."""
    sigmas = [0.0] * x.ndim
    for a in axes:
        sigmas[a] = sigma
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=4.0)


def _warp(images: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """skimage ``warp(x, inverse_map=AffineTransform)`` with the image centre fixed; ``mats`` (N, 2, 2) act on (x, y)."""
    n = len(images)
    offset = CENTER * (1 - mats.sum(axis=2))  # keeps (13.5, 13.5) fixed, as the original computes a3, b3
    r, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    x_in = mats[:, 0, 0, None, None] * c + mats[:, 0, 1, None, None] * r + offset[:, 0, None, None]
    y_in = mats[:, 1, 0, None, None] * c + mats[:, 1, 1, None, None] * r + offset[:, 1, None, None]
    batch = np.broadcast_to(np.arange(n)[:, None, None], x_in.shape)
    out = ndimage.map_coordinates(_unit(images), [batch, y_in, x_in], order=1, mode="constant", cval=0.0)
    return _to_uint8(out)


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], n)


def shot_noise(images, rng):
    c = 3  # severity 5
    return _to_uint8(rng.poisson(_unit(images) * c) / c)


def impulse_noise(images, rng):
    x = _unit(images)
    flipped = rng.random(x.shape) < 0.17  # severity 4; skimage s&p with salt_vs_pepper 0.5
    salted = rng.random(x.shape) < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return _to_uint8(x)


def glass_blur(images, rng):
    sigma, delta, iterations = 0.7, 1, 2  # severity 1
    # The original calls gaussian(..., multichannel=True) on a 2-D image, so the last axis counts as channels and
    # only the vertical axis is smoothed; kept for fidelity.
    x = (_gaussian(_unit(images), sigma, axes=(1,)) * 255).astype(np.uint8)
    n = len(x)
    for _ in range(iterations):
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                who = np.flatnonzero(rng.random(n) < 0.5)
                d = rng.integers(-delta, delta, size=(len(who), 2))  # numpy randint's high is exclusive: {-1, 0}
                hp, wp = h + d[:, 1], w + d[:, 0]
                here = x[who, h, w].copy()
                x[who, h, w] = x[who, hp, wp]
                x[who, hp, wp] = here
    return _to_uint8(_gaussian(x / 255.0, sigma, axes=(1,)))


def motion_blur(images, rng):
    """ImageMagick MotionBlurImage(radius=10, sigma=3, angle): a one-sided Gaussian trail, edge pixels repeated."""
    radius, sigma = 10, 3  # severity 1
    width = int(2 * radius + 0.5)
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma * sigma))
    kernel /= kernel.sum()
    x = images.astype(np.float64)
    out = np.empty_like(x)
    rr, cc = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    for k, angle in enumerate(rng.uniform(-45, 45, len(x))):
        a = np.deg2rad(angle)
        dx = np.ceil(np.arange(width) * np.cos(a) - 0.5).astype(int)
        dy = np.ceil(np.arange(width) * np.sin(a) - 0.5).astype(int)
        rows = np.clip(rr[None] + dy[:, None, None], 0, SIZE - 1)
        cols = np.clip(cc[None] + dx[:, None, None], 0, SIZE - 1)
        out[k] = np.tensordot(kernel, x[k][rows, cols], axes=1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shear(images, rng):
    s = 0.4 * _signs(rng, len(images))  # severity 2, random direction; skimage<0.19 AffineTransform(shear=s)
    mats = np.zeros((len(images), 2, 2))
    mats[:, 0, 0], mats[:, 0, 1], mats[:, 1, 1] = 1.0, -np.sin(s), np.cos(s)
    return _warp(images, mats)


def rotate(images, rng):
    t = 0.4 * _signs(rng, len(images))  # severity 2: 0.4 rad (about 23 degrees), random direction
    mats = np.stack([np.stack([np.cos(t), -np.sin(t)], 1), np.stack([np.sin(t), np.cos(t)], 1)], 1)
    return _warp(images, mats)


def scale(images, rng):
    mats = np.tile(np.eye(2) / 0.7, (len(images), 1, 1))  # severity 3: the digit shrinks to 70 %
    return _warp(images, mats)


def translate(images, rng):
    n = len(images)
    shift = 3 * rng.choice([-1.0, 1.0], (n, 2))  # severity 3; both axes always move, so the shift is diagonal
    r, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    batch = np.broadcast_to(np.arange(n)[:, None, None], (n, SIZE, SIZE))
    coords = [batch, r + shift[:, 1, None, None], c + shift[:, 0, None, None]]
    return _to_uint8(ndimage.map_coordinates(_unit(images), coords, order=1, mode="constant", cval=0.0))


def brightness(images, rng):
    # gray -> HSV, V + 0.5, back to gray: for gray pixels that is exactly min(x + 0.5, 1) (severity 5)
    return _to_uint8(_unit(images) + 0.5)


def stripe(images, rng):
    x = images.copy()
    x[:, :, :7] = 255 - x[:, :, :7]
    x[:, :, 21:] = 255 - x[:, :, 21:]
    return x


def _plasma(n: int, rng: np.random.Generator, mapsize: int = 256, decay: float = 1.4) -> np.ndarray:
    """Diamond-square heightmaps in [0, 1], (n, mapsize, mapsize): the original plasma_fractal, batched."""
    m = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + np.roll(corners, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        m[:, half::step, half::step] = wibbled(sq)
        dr, ul = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        m[:, half::step, 0::step] = wibbled(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(images, rng):
    c0 = 3.0  # severity 5: (3.0, wibble decay 1.4)
    x = _unit(images)
    haze = np.concatenate([_plasma(len(chunk), rng)[:, :SIZE, :SIZE] for chunk in np.array_split(x, max(1, len(x) // 32))])
    peak = x.max(axis=(1, 2), keepdims=True)
    return _to_uint8((x + c0 * haze) * peak / (peak + c0))


def spatter(images, rng):
    loc, spread, sigma, cut, msigma = 0.65, 0.3, 1, 0.65, 1.5  # severity 4 (mud)
    x = _unit(images)
    liquid = _gaussian(rng.normal(loc, spread, x.shape), sigma)
    liquid[liquid < cut] = 0
    m = _gaussian((liquid > cut).astype(np.float64), msigma)
    m[m < 0.8] = 0
    return _to_uint8(x * (1 - m) + 63 / 255 * m)


def _line(c0, r0, c1, r1) -> np.ndarray:
    """MNIST-C line_from_points: a soft line of width ~2.3 px between columns floor(c0) and ceil(c1)."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE))
    cc, rr = np.meshgrid(np.linspace(0, 27, SIZE), np.linspace(0, 27, SIZE), sparse=True)
    dist = np.clip(np.abs(rr - ((r1 - r0) / (c1 - c0) * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    line[:, :int(np.floor(c0))] = 0
    line[:, int(np.ceil(c1)):] = 0
    return line


def dotted_line(images, rng):
    out = _unit(images)
    for k in range(len(out)):
        r0, r1 = rng.integers(0, 27, size=2)
        line = _line(0, r0, 27, r1)
        for start in range(0, 28, 4):  # every other 2-column segment is blanked, starting with columns 0-1
            line[:, start:start + 2] = 0
        out[k] = out[k] + line
    return _to_uint8(out)


def zigzag(images, rng):
    out = _unit(images)
    a = b = 2.0
    c0, c1 = 2, 25
    for k in range(len(out)):
        r0 = rng.integers(0, 27)
        r1 = r0 + rng.integers(-5, 5)
        theta = np.arctan((r1 - r0) / (c1 - c0))
        d = (c1 - c0) / np.cos(theta)
        points, r_i = [(0.0, 0.0)], 0.0
        for i in range(int((d - a) // (2 * a)) + 1):
            r_i = (-1) ** i * b
            points.append(((2 * i + 1) * a, r_i))
        max_c = (2 * a) * (d // (2 * a))
        if d != max_c:
            points.append((d, r_i / (2 * (d - max_c))))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        cs, rs = rot @ np.array(points).T
        cs, rs = cs + c0, rs + r0
        x = out[k]
        for i in range(1, len(cs)):
            x = np.clip(x + _line(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0, 1)
        out[k] = x
    return _to_uint8(out)


def canny_edges(images, rng):
    """skimage.feature.canny (sigma 1, thresholds 0.1 / 0.2) on [0, 1] images; edges are 255, the rest 0."""
    x = _unit(images)
    smooth = _gaussian(x, 1.0, mode="constant") / (_gaussian(np.ones_like(x), 1.0, mode="constant") + 1e-16)
    gi, gj = ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=2)
    mag = np.hypot(gi, gj)
    # Non-maximum suppression: compare with the magnitude one step along +-gradient on the 3x3 square, linearly
    # interpolated between the axis and the diagonal neighbour (what skimage does).
    step = np.maximum(np.abs(gi), np.abs(gj))
    safe = np.where(step > 0, step, 1.0)
    di, dj = gi / safe, gj / safe
    n, r, c = np.meshgrid(np.arange(len(x)), np.arange(SIZE), np.arange(SIZE), indexing="ij")
    ahead = ndimage.map_coordinates(mag, [n, r + di, c + dj], order=1, mode="constant")
    behind = ndimage.map_coordinates(mag, [n, r - di, c - dj], order=1, mode="constant")
    interior = np.zeros_like(mag, dtype=bool)
    interior[:, 1:-1, 1:-1] = True
    peak = interior & (step > 0) & (mag >= ahead) & (mag >= behind)
    low, high = peak & (mag >= 0.1), peak & (mag >= 0.2)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = ndimage.label(low, structure)
    strong = np.zeros(count + 1, dtype=bool)
    strong[np.unique(labels[high])] = True
    strong[0] = False
    return (strong[labels] * 255).astype(np.uint8)


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "glass_blur": glass_blur, "motion_blur": motion_blur,
    "shear": shear, "scale": scale, "rotate": rotate, "brightness": brightness, "translate": translate,
    "stripe": stripe, "fog": fog, "spatter": spatter, "dotted_line": dotted_line, "zigzag": zigzag,
    "canny_edges": canny_edges,
}


# Dev corruptions: the rest of MNIST-C's candidate list, at the original default severities, for tuning only.
def gaussian_noise(images, rng):
    return _to_uint8(_unit(images) + rng.normal(0, 0.38, images.shape))


def speckle_noise(images, rng):
    x = _unit(images)
    return _to_uint8(x + x * rng.normal(0, 0.6, x.shape))


def gaussian_blur(images, rng):
    return _to_uint8(_gaussian(_unit(images), 2.0, axes=(1,)))  # multichannel=True quirk, as in glass_blur


def contrast(images, rng):
    x = _unit(images)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((x - mean) * 0.1 + mean)


def pixelate(images, rng):
    from PIL import Image

    small = int(SIZE * 0.4)
    return np.stack([np.asarray(Image.fromarray(im).resize((small, small), Image.BOX).resize((SIZE, SIZE), Image.BOX))
                     for im in images])


def jpeg_compression(images, rng):
    from PIL import Image

    def roundtrip(im):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=7)
        return np.asarray(Image.open(buf).convert("L"))

    return np.stack([roundtrip(im) for im in images])


def quantize(images, rng):
    return (np.round(images.astype(np.float64) / 255) * 255).astype(np.uint8)  # 1 bit


def zoom_blur(images, rng):
    x = _unit(images)
    total = x.copy()
    for z in np.arange(1, 1.31, 0.03):
        ch = int(np.ceil(SIZE / z))
        top = (SIZE - ch) // 2
        zoomed = ndimage.zoom(x[:, top:top + ch, top:top + ch], (1, z, z), order=1)
        trim = (zoomed.shape[1] - SIZE) // 2
        total += zoomed[:, trim:trim + SIZE, trim:trim + SIZE]
    return _to_uint8(total / (len(np.arange(1, 1.31, 0.03)) + 1))


def line(images, rng):
    out = _unit(images)
    for k in range(len(out)):
        out[k] = out[k] + _line(rng.integers(0, 5), rng.integers(0, 27), rng.integers(22, 27), rng.integers(0, 27))
    return _to_uint8(out)


DEV_CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise, "speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur,
    "contrast": contrast, "pixelate": pixelate, "jpeg_compression": jpeg_compression, "quantize": quantize,
    "zoom_blur": zoom_blur, "line": line,
}


def apply_corruption(name: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply the named corruption (benchmark or dev); unknown names raise ValueError listing the valid ones."""
    fn = CORRUPTIONS.get(name) or DEV_CORRUPTIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(sorted(CORRUPTIONS | DEV_CORRUPTIONS))}")
    return fn(np.asarray(images, dtype=np.uint8), rng)
