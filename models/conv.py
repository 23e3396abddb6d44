"""A 1x1 strided convolution that avoids a oneDNN crash of TensorFlow's CPU build.

TensorFlow 2.21's CPU build (oneDNN on, the default) crashes the process
(segmentation fault or "double free or corruption") in the backward-filter
kernel of a 1x1 convolution with stride 2 and fewer than 16 input channels at
64 px and above, e.g. the ResNet shortcut of ``--width 0.125 --image_size 64``
(issue 29; measured with ``benchmarks/pointwise_conv.py``). A 1x1 convolution
with stride s reads only every s-th pixel, so it equals a stride-1 1x1
convolution of ``x[:, ::s, ::s, :]``: :class:`PointwiseConv2D` computes it so,
with the same weights, output and gradients, on every backend, where the
input has fewer than :data:`MIN_STRIDED_CHANNELS` channels; other inputs,
kernels and stride 1 run as :class:`keras.layers.Conv2D` does (oneDNN's
strided kernel, as fast or faster there).
"""

import keras
from keras import layers, ops

#: Input channels from which the strided 1x1 kernel is used as is (4 and 8
#: crash at 64 and 96 px; 16 and 32 do not).
MIN_STRIDED_CHANNELS = 16


@keras.saving.register_keras_serializable(package="nc_ssl")
class PointwiseConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` whose 1x1 strided case slices, then convolves at stride 1."""

    def convolution_op(self, inputs, kernel):
        strides = tuple(self.strides)
        if (tuple(self.kernel_size) != (1, 1) or strides == (1, 1)
                or kernel.shape[-2] >= MIN_STRIDED_CHANNELS):
            return super().convolution_op(inputs, kernel)
        # "valid" and "same" agree for a 1x1 kernel: ceil(n / s) outputs, no padding.
        if self.data_format == "channels_last":
            inputs = inputs[:, ::strides[0], ::strides[1], :]
        else:
            inputs = inputs[:, :, ::strides[0], ::strides[1]]
        return ops.conv(inputs, kernel, strides=1, padding="valid",
                        dilation_rate=self.dilation_rate, data_format=self.data_format)
