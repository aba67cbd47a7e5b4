"""Convolution layers, as ``torch.nn``: ``Conv1d``, ``Conv2d`` and ``ConvTranspose2d``.

Each layer holds ``weight`` (and ``bias``) under torch's names and shapes, so a torch
``state_dict`` loads by name and gives the same outputs; ``forward`` calls one function of
``tensorlite.functional`` (``conv1d``, ``conv2d``, ``conv_transpose2d``), with ``F.pad`` first
when ``padding_mode`` is not "zeros", exactly as torch does.

=================  =====================================================================
weight shape       ``(out_channels, in_channels / groups, *kernel_size)`` for ``ConvNd``,
                   ``(in_channels, out_channels / groups, *kernel_size)`` for
                   ``ConvTranspose2d``
bias shape         ``(out_channels,)``
initialisation     torch's ``reset_parameters``: ``init.kaiming_uniform_(weight, a=sqrt(5))``
                   (uniform in ±1/sqrt(fan_in)), bias uniform in ±1/sqrt(fan_in), where
                   ``fan_in = weight.shape[1] * prod(kernel_size)``
=================  =====================================================================
"""

import math

import numpy as np

from tensorlite import functional as F
from tensorlite.nn import compat, init
from tensorlite.nn.module import Module
from tensorlite.nn.parameter import Parameter

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PADDING_STRINGS = ("same", "valid")


def _ntuple(value, n, name, op):
    """``value`` as a tuple of ``n`` ints (one int is repeated), as torch's ``_pair``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        items = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be an int or a tuple of {n} ints, got "
                        f"{value!r}") from None
    if len(items) != n:
        raise ValueError(f"{op}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    return items


class _ConvNd(Module):
    """What ``Conv1d``, ``Conv2d`` and ``ConvTranspose2d`` share: argument checks, the
    parameters, torch's initialisation and ``extra_repr``."""

    _dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 transposed, output_padding, groups, bias, padding_mode, device, dtype):
        super().__init__()
        op = type(self).__name__
        dtype = compat.layer_dtype(op, device, dtype)
        n = self._dims
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
        if not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError(f"{op}: groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"{op}: in_channels must be divisible by groups "
                             f"(in_channels={in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"{op}: out_channels must be divisible by groups "
                             f"(out_channels={out_channels}, groups={groups})")
        kernel_size = _ntuple(kernel_size, n, "kernel_size", op)
        stride = _ntuple(stride, n, "stride", op)
        dilation = _ntuple(dilation, n, "dilation", op)
        output_padding = _ntuple(output_padding, n, "output_padding", op)
        if min(kernel_size) < 1 or min(stride) < 1 or min(dilation) < 1:
            raise ValueError(f"{op}: kernel_size, stride and dilation must be positive, got "
                             f"kernel_size={kernel_size}, stride={stride}, dilation={dilation}")
        if isinstance(padding, str):
            if transposed:
                raise ValueError(f"{op}: padding must be an int or a tuple of ints, got "
                                 f"{padding!r}")
            if padding not in _PADDING_STRINGS:
                raise ValueError(f"{op}: invalid padding string {padding!r}, should be one of "
                                 f"{set(_PADDING_STRINGS)}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride})")
        else:
            padding = _ntuple(padding, n, "padding", op)
            if min(padding) < 0:
                raise ValueError(f"{op}: padding must be non-negative, got {padding}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{op}: padding_mode must be one of {set(_PADDING_MODES)}, but got "
                             f"padding_mode={padding_mode!r}")
        if transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {op}')

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = transposed
        self.output_padding = output_padding
        self.groups = groups
        self.padding_mode = padding_mode
        # F.pad's argument for the non-"zeros" modes: last dimension first, (left, right) each.
        self._reversed_padding_repeated_twice = self._pad_argument()

        if transposed:
            shape = (in_channels, out_channels // groups, *kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *kernel_size)
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        self.bias = Parameter(np.empty(out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def _pad_argument(self):
        if not isinstance(self.padding, str):
            return tuple(p for p in reversed(self.padding) for _ in range(2))
        pads = [0, 0] * self._dims
        if self.padding == "same":
            # The same split as torch: the odd element of the total goes on the right.
            for i, (d, k) in enumerate(zip(reversed(self.dilation), reversed(self.kernel_size))):
                total = d * (k - 1)
                pads[2 * i], pads[2 * i + 1] = total // 2, total - total // 2
        return pads

    def reset_parameters(self):
        """Draw fresh initial values as torch does (from tensorlite's generator, see
        ``tl.manual_seed``)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        n = self._dims
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _Conv(_ConvNd):
    """``Conv1d`` and ``Conv2d``: the forward pass, through ``F.pad`` for the non-zero
    padding modes."""

    _function = None  # "conv1d" or "conv2d", looked up in F when called

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         False, 0, groups, bias, padding_mode, device, dtype)

    def _conv_forward(self, input, weight, bias):
        conv = getattr(F, self._function)
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)


class Conv1d(_Conv):
    """1-D convolution over an (N, C_in, L) or unbatched (C_in, L) input, as
    ``torch.nn.Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True, padding_mode="zeros", device=None, dtype=None)``.

    ``padding`` is an int, a 1-tuple, "valid" (none) or "same" (output length = input
    length; stride 1 only); ``padding_mode`` is "zeros", "reflect", "replicate" or
    "circular". ``weight`` has shape (out_channels, in_channels / groups, kernel_size).
    """

    _dims = 1
    _function = "conv1d"


class Conv2d(_Conv):
    """2-D convolution over an (N, C_in, H, W) or unbatched (C_in, H, W) input, as
    ``torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True, padding_mode="zeros", device=None, dtype=None)``.

    ``kernel_size``, ``stride``, ``padding`` and ``dilation`` are ints or (h, w) pairs;
    ``padding`` may also be "valid" (none) or "same" (output size = input size; stride 1
    only). ``padding_mode`` is "zeros", "reflect", "replicate" or "circular". ``weight`` has
    shape (out_channels, in_channels / groups, kH, kW).
    """

    _dims = 2
    _function = "conv2d"


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution (the gradient of ``Conv2d`` with respect to its input), as
    ``torch.nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros", device=None,
    dtype=None)``.

    The output size per spatial axis is
    ``(in - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1``;
    ``forward(input, output_size=None)`` may ask for a size in that range instead of giving
    ``output_padding``. ``weight`` has shape (in_channels, out_channels / groups, kH, kW).
    Only ``padding_mode="zeros"`` exists, as in torch.
    """

    _dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         True, output_padding, groups, bias, padding_mode, device, dtype)

    def _output_padding(self, input, output_size):
        """The output_padding giving ``output_size`` (torch's rule), or the layer's own."""
        if output_size is None:
            return self.output_padding
        n = self._dims
        output_size = [int(s) for s in output_size]
        batched = input.ndim == n + 2
        leading = 2 if batched else 1
        if len(output_size) == leading + n:
            output_size = output_size[leading:]
        if len(output_size) != n:
            raise ValueError(f"ConvTranspose2d: for {input.ndim}D input, output_size must have "
                             f"{n} or {leading + n} elements (got {len(output_size)})")
        spatial = tuple(input.shape[leading:])
        min_sizes = [(size - 1) * s - 2 * p + d * (k - 1) + 1 for size, s, p, d, k in
                     zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]
        max_sizes = [low + s - 1 for low, s in zip(min_sizes, self.stride)]
        for size, low, high in zip(output_size, min_sizes, max_sizes):
            if not low <= size <= high:
                raise ValueError(f"ConvTranspose2d: requested an output size of {output_size}, "
                                 f"but valid sizes range from {min_sizes} to {max_sizes} (for "
                                 f"an input of spatial size {list(spatial)})")
        return tuple(size - low for size, low in zip(output_size, min_sizes))

    def forward(self, input, output_size=None):
        output_padding = self._output_padding(input, output_size)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)
