"""Convolution of inputs at most 2 x 2 pixels wide, as patches times kernel, on CPU.

XLA:CPU's convolution is pathologically slow on inputs of 1 or 2 pixels a side: a 3x3
convolution of 64 x (2, 2, 512) maps took 1,089 ms against 18 ms for the same sums as
one matrix product over explicit patches (and 41 ms in PyTorch), measured on the 2-core
CPU; at 3 x 3 pixels and above XLA is fast again (50 ms at (3, 3, 512)). A ResNet's
stage4 is 2 x 2 at 64 px input (1 x 1 at 32), the size of FER2013's faces, and
Score-CAM runs one forward per channel there. `conv_general_dilated` has the signature
of `jax.lax.conv_general_dilated` (flax's `nn.Conv(conv_general_dilated=...)`), takes
that path only for such small inputs on the CPU backend with a plain convolution
(NHWC / HWIO, explicit padding, no dilation, one group), and calls XLA's otherwise, so
GPU and TPU programs are unchanged. The two agree to float32 rounding (the sums are
added in another order).
"""
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

# Inputs up to this many pixels a side take the patches path (measured: 1 and 2 slow,
# 3 and above not).
MAX_SIDE = 2


def _takes_patches(lhs: jnp.ndarray, rhs: jnp.ndarray, padding: Any, lhs_dilation: Any,
                   rhs_dilation: Any, dimension_numbers: Any, feature_group_count: int,
                   kwargs: Dict[str, Any]) -> bool:
    """A plain NHWC / HWIO convolution with a kernel wider than 1 x 1 of an input at most
    MAX_SIDE pixels a side, on the CPU backend."""
    if (lhs.ndim != 4 or max(lhs.shape[1:3]) > MAX_SIDE or rhs.shape[0] * rhs.shape[1] == 1
            or kwargs or feature_group_count != 1 or isinstance(padding, str)
            or jax.default_backend() != "cpu"):
        return False
    if any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
        return False
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: Union[str, Sequence[Tuple[int, int]]],
                         lhs_dilation: Optional[Sequence[int]] = None,
                         rhs_dilation: Optional[Sequence[int]] = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs: Any) -> jnp.ndarray:
    """`lax.conv_general_dilated`, through explicit patches when lhs (B, h, w, C) has
    h, w <= MAX_SIDE on CPU (see the module docstring); rhs (kh, kw, C, O)."""
    if not _takes_patches(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                          feature_group_count, kwargs):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision, **kwargs)
    assert not isinstance(padding, str)   # _takes_patches: explicit (low, high) pairs only
    (top, bottom), (left, right) = padding
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, c, o = rhs.shape
    sh, sw = window_strides
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    patches = jnp.stack([x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                         for i in range(kh) for j in range(kw)], axis=3)   # (B, oh, ow, k, C)
    return jnp.einsum("bhwkc,kco->bhwo", patches, rhs.reshape(kh * kw, c, o),
                      precision=precision)
