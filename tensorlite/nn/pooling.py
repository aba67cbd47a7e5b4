"""Pooling layers, as ``torch.nn``: ``MaxPool1d``, ``MaxPool2d``, ``AvgPool1d``, ``AvgPool2d``
and ``AdaptiveAvgPool2d``.

They hold no parameters; each keeps its arguments under torch's attribute names (stored as
torch stores them, so ``extra_repr`` reads the same) and calls the function of the same name
in ``tensorlite.functional``. ``stride`` defaults to ``kernel_size``.
"""

from tensorlite import functional as F
from tensorlite.nn.module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d"]


def _single(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


class _MaxPoolNd(Module):
    _function = None  # "max_pool1d" or "max_pool2d", looked up in F when called

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input):
        pool = getattr(F, self._function)
        # dilation and return_indices are passed only when asked for, so the common call is
        # the documented F.max_pool2d(input, kernel_size, stride, padding, ceil_mode=...).
        extra = {}
        if self.dilation != 1 and self.dilation != (1,) * len(_single(self.dilation)):
            extra["dilation"] = self.dilation
        if self.return_indices:
            extra["return_indices"] = True
        return pool(input, self.kernel_size, self.stride, self.padding,
                    ceil_mode=self.ceil_mode, **extra)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """The maximum over each window of an (N, C, L) or (C, L) input, as
    ``torch.nn.MaxPool1d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)``; padding counts as -inf."""

    _function = "max_pool1d"


class MaxPool2d(_MaxPoolNd):
    """The maximum over each window of an (N, C, H, W) or (C, H, W) input, as
    ``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    return_indices=False, ceil_mode=False)``; sizes are ints or (h, w) pairs, padding counts
    as -inf."""

    _function = "max_pool2d"


class _AvgPoolNd(Module):
    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """The mean over each window of an (N, C, L) or (C, L) input, as
    ``torch.nn.AvgPool1d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True)``; with ``count_include_pad`` the zero padding counts in the
    divisor. Sizes are stored as 1-tuples, as torch does."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size = _single(kernel_size)
        self.stride = _single(stride if stride is not None else kernel_size)
        self.padding = _single(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """The mean over each window of an (N, C, H, W) or (C, H, W) input, as
    ``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``; with ``count_include_pad`` the zero
    padding counts in the divisor, and ``divisor_override`` replaces the divisor."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        extra = {} if self.divisor_override is None else {"divisor_override": self.divisor_override}
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding,
                            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                            **extra)


class AdaptiveAvgPool2d(Module):
    """The mean over windows chosen so that the output of an (N, C, H, W) or (C, H, W) input
    has spatial size ``output_size`` (an int, or an (h, w) pair whose entries may be None to
    keep that input size), as ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
