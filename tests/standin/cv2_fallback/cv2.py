"""A stand-in for the one OpenCV function the extension uses, ``cv2.GaussianBlur``.

Used only where ``opencv-python`` is not installed (the WebUI ships it).
Follows OpenCV's documented behaviour: separable kernel from
``getGaussianKernel`` (exp(-(i - (k-1)/2)^2 / (2 sigma^2)), normalized), sigmaY
= sigmaX when 0, border ``BORDER_REFLECT_101``; uint8 input is rounded back
to uint8 (OpenCV's fixed-point path can differ by one level).
"""

from __future__ import annotations

import numpy as np

BORDER_REFLECT_101 = 4
BORDER_DEFAULT = BORDER_REFLECT_101


def getGaussianKernel(ksize: int, sigma: float) -> np.ndarray:  # noqa: N802 - OpenCV's name
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    offsets = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    kernel = np.exp(-(offsets**2) / (2 * sigma * sigma))
    return (kernel / kernel.sum()).reshape(-1, 1)


def _blur_axis(array: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    radius = len(kernel) // 2
    if radius == 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(array, pad, mode="reflect")  # numpy's "reflect" is OpenCV's REFLECT_101
    result = np.zeros_like(array, dtype=np.float64)
    n = array.shape[axis]
    for i, weight in enumerate(kernel):
        result += weight * np.take(padded, np.arange(i, i + n), axis=axis)
    return result


def GaussianBlur(src: np.ndarray, ksize: tuple[int, int], sigmaX: float, dst=None, sigmaY: float = 0, borderType: int = BORDER_DEFAULT) -> np.ndarray:  # noqa: N802,N803
    if borderType != BORDER_REFLECT_101:
        raise NotImplementedError("the cv2 stand-in implements BORDER_REFLECT_101 only")
    if sigmaY <= 0:
        sigmaY = sigmaX
    kx, ky = ksize
    result = np.asarray(src, dtype=np.float64)
    result = _blur_axis(result, getGaussianKernel(kx, sigmaX).ravel(), axis=1)
    result = _blur_axis(result, getGaussianKernel(ky, sigmaY).ravel(), axis=0)
    if src.dtype == np.uint8:
        return np.clip(np.rint(result), 0, 255).astype(np.uint8)
    return result.astype(src.dtype)
