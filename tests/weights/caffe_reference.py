"""A NumPy model of Caffe's bvlc_alexnet forward pass, and random-weight files in the
caffe-tensorflow layout, for the tests (shares no code with the project but the file writer)."""

import numpy as np

from alexnet_tf.weights import caffe

# Narrow widths (the file's shapes say them) keep the reference fast; the geometry is Caffe's.
TINY_FILTERS = (8, 16, 12, 12, 8)
TINY_FC = 32
TINY_CLASSES = 7

# The model works in Caffe's own layouts (NCHW, conv weights [out, in/group, kh, kw], fc
# weights [out, in] over C*H*W), written from Caffe's layer definitions.


def _caffe_conv(x, weight, bias, *, stride, pad, group):
    n, c, h, w = x.shape
    out, in_per_group, kh, kw = weight.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    y = np.empty((n, out, oh, ow))
    out_per_group = out // group
    for g in range(group):
        xg = x[:, g * in_per_group:(g + 1) * in_per_group]
        cols = np.empty((n, in_per_group, kh, kw, oh, ow))
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xg[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
        wg = weight[g * out_per_group:(g + 1) * out_per_group].reshape(out_per_group, -1)
        y[:, g * out_per_group:(g + 1) * out_per_group] = np.einsum(
            "ok,nkhw->nohw", wg, cols.reshape(n, -1, oh, ow))
    return y + bias[None, :, None, None]


def _caffe_lrn(x, *, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    # Caffe's LRNLayer (ACROSS_CHANNELS): scale = k + alpha / n * sum of squares over n.
    squares = np.pad(x * x, ((0, 0), (local_size // 2, local_size // 2), (0, 0), (0, 0)))
    window = sum(squares[:, i:i + x.shape[1]] for i in range(local_size))
    return x * (k + alpha / local_size * window) ** -beta


def _caffe_max_pool(x, *, size=3, stride=2):
    n, c, h, w = x.shape
    # Caffe rounds the output size up; for 55, 27 and 13 that equals rounding down.
    oh, ow = -(-(h - size) // stride) + 1, -(-(w - size) // stride) + 1
    y = np.full((n, c, oh, ow), -np.inf)
    for i in range(size):
        for j in range(size):
            window = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            y[:, :, :window.shape[2], :window.shape[3]] = np.maximum(
                y[:, :, :window.shape[2], :window.shape[3]], window)
    return y


def caffe_forward(blobs, images_nchw, *, lrn_k=1.0):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = images_nchw.astype(np.float64)
    x = _caffe_max_pool(_caffe_lrn(relu(_caffe_conv(x, *blobs["conv1"], stride=4, pad=0, group=1)), k=lrn_k))
    x = _caffe_max_pool(_caffe_lrn(relu(_caffe_conv(x, *blobs["conv2"], stride=1, pad=2, group=2)), k=lrn_k))
    x = relu(_caffe_conv(x, *blobs["conv3"], stride=1, pad=1, group=1))
    x = relu(_caffe_conv(x, *blobs["conv4"], stride=1, pad=1, group=2))
    x = _caffe_max_pool(relu(_caffe_conv(x, *blobs["conv5"], stride=1, pad=1, group=2)))
    x = x.reshape(len(x), -1)  # Caffe's InnerProduct flattens C*H*W
    x = relu(x @ blobs["fc6"][0].T + blobs["fc6"][1])
    x = relu(x @ blobs["fc7"][0].T + blobs["fc7"][1])  # dropout is the identity at test time
    return x @ blobs["fc8"][0].T + blobs["fc8"][1]


def random_caffe_blobs(seed=0, filters=TINY_FILTERS, fc_units=TINY_FC, num_classes=TINY_CLASSES):
    """Caffe-layout blobs, scaled (He) so that activations stay large enough for the LRN's
    constants to matter (checked in the test)."""
    rng = np.random.default_rng(seed)
    in_channels = (3, filters[0] // 2, filters[1], filters[2] // 2, filters[3] // 2)
    sizes = (11, 5, 3, 3, 3)
    blobs = {}
    for i, name in enumerate(caffe.CONV_LAYERS):
        fan_in = in_channels[i] * sizes[i] ** 2
        blobs[name] = (rng.normal(0, np.sqrt(2 / fan_in), (filters[i], in_channels[i], sizes[i], sizes[i])),
                       rng.normal(0, 0.5, filters[i]))
    for name, fan_in, out in (("fc6", filters[4] * 36, fc_units), ("fc7", fc_units, fc_units),
                              ("fc8", fc_units, num_classes)):
        blobs[name] = rng.normal(0, np.sqrt(2 / fan_in), (out, fan_in)), rng.normal(0, 0.5, out)
    return {name: (w.astype(np.float32), b.astype(np.float32)) for name, (w, b) in blobs.items()}


def to_caffe_tensorflow_layout(blobs):
    """What caffe-tensorflow writes: conv [kh, kw, in/group, out]; fc [in, out] with fc6's
    rows reordered from Caffe's (c, h, w) to pool5's (h, w, c)."""
    weights = {}
    for name, (w, b) in blobs.items():
        if w.ndim == 4:
            weights[name] = (w.transpose(2, 3, 1, 0), b)
        elif name == "fc6":
            channels = w.shape[1] // 36
            weights[name] = (w.reshape(-1, channels, 6, 6).transpose(2, 3, 1, 0).reshape(-1, w.shape[0]), b)
        else:
            weights[name] = (w.T, b)
    return weights


def write_caffe_file(path, seed=0, **sizes):
    """A random-weight bvlc_alexnet .npy as caffe-tensorflow writes it; returns Caffe's blobs."""
    blobs = random_caffe_blobs(seed, **sizes)
    caffe.write_npy_weights(str(path), to_caffe_tensorflow_layout(blobs))
    return blobs


def caffe_input(seed=1, batch=2):
    """BGR images minus Caffe's mean, as Caffe's data layer gives them: NHWC and NCHW."""
    rng = np.random.default_rng(seed)
    bgr = rng.uniform(0, 255, (batch, 227, 227, 3)).astype(np.float32)
    nhwc = bgr - np.asarray(caffe.CAFFE_BGR_MEAN, np.float32)
    return bgr, nhwc, nhwc.transpose(0, 3, 1, 2)
