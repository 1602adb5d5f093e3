"""`AlexNetSpec`: every architectural choice of the network as one frozen value.

The defaults are the paper's (Sections 3 and 5); Caffe's bvlc_alexnet and torchvision's AlexNet
are the same type with other values (`alexnet_tf.weights`). A run's `model_spec.json` stores it
(`to_json` / `from_json`), a resume compares it (`differences`), each weight reader returns it
and `build_alexnet(spec)` builds it. How a network runs (the kernels, the seed, its name) is not
part of it: those are `build_alexnet`'s own keywords.
"""

import dataclasses

from alexnet_tf.model.layers import LRN_ALPHA, LRN_BIAS

# The paper's widths (both GPU halves together), Section 3.5.
PAPER_CONV_FILTERS = (96, 256, 384, 384, 256)
PAPER_FC_UNITS = 4096
# conv1 is an 11x11 stride-4 VALID convolution: 224 + 1 + 2 = 227 gives the paper's 55x55.
# (Caffe's bvlc_alexnet takes 227-px crops and pads nothing: conv1_padding=(0, 0).)
PAPER_CONV1_PADDING = (1, 2)
# Dropout on the inputs of fc7 and fc8, i.e. after fc6 and fc7 (Section 4.2). torchvision's
# AlexNet has it on the inputs of fc6 and fc7 instead.
PAPER_DROPOUT_INPUTS_OF = ("fc7", "fc8")
FC_LAYERS = ("fc6", "fc7", "fc8")
INITS = ("paper", "he")
# Max pooling windows with stride 2: the paper's overlapping 3 (Section 3.4) or the
# traditional non-overlapping 2 (the same output sizes: 55 -> 27 -> 13 -> 6 either way).
POOL_SIZES = (3, 2)
# The hidden layers' nonlinearity: the paper's ReLU, or the tanh it compares it with (3.1).
ACTIVATIONS = ("relu", "tanh")
# The convolutional layers Section 7's ablation removes ("removing any of the middle layers
# results in a loss of about 2% for the top-1 performance"); the next layer takes its input.
REMOVABLE_LAYERS = ("conv3", "conv4", "conv5")

# The smallest input for which pool5 is still at least 1x1: (64 + 3 - 11) / 4 + 1 = 15,
# pool1 -> 7, pool2 -> 3, pool5 -> 1.
MIN_IMAGE_SIZE = 64


@dataclasses.dataclass(frozen=True)
class AlexNetSpec:
    """The network's architecture, the paper's unless told otherwise.

    Attributes:
      num_classes: width of fc8.
      image_size: side S of the square RGB input [B, S, S, 3] (224 in the paper; at least
        `MIN_IMAGE_SIZE`).
      groups: 2 reproduces the paper's two-GPU connectivity in conv2, conv4 and conv5;
        1 connects every layer to all of the previous one.
      dropout: rate of the dropout layers (0.5 in the paper).
      lrn: whether norm1 and norm2 normalise (False makes them identities, for ablations).
      lrn_bias: the LRN's k (the paper's 2; Caffe's bvlc_alexnet uses 1).
      lrn_alpha: the LRN's alpha, multiplying the plain sum of squares (the paper's 1e-4;
        Caffe's prototxt 1e-4 is divided by the window of 5, i.e. 2e-5 here).
      conv1_padding: (before, after) zeros added to each spatial side of the input before
        conv1 (the paper's (1, 2) makes 224 the 227 that gives 55x55; (0, 0) for 227 input).
      dropout_inputs_of: the fully connected layers whose inputs dropout drops: the paper's
        ("fc7", "fc8") (layers drop6, drop7); torchvision's ("fc6", "fc7") (drop5, drop6).
      adaptive_pool_size: None, or torchvision's 6: pool5 is followed by PyTorch's adaptive
        average pooling to 6x6 (the identity at 224 px), so any input size feeds fc6.
      weight_decay: the paper's decay: an L2 term whose gradient is `weight_decay * w` on
        every kernel, so it enters the momentum exactly as in the paper's update rule.
      init: "paper" (N(0, 0.01), unit biases in conv2/4/5, fc6/7) or "he".
      conv_filters: kernels of conv1..conv5 (shrink them for fast tests).
      fc_units: width of fc6 and fc7.
      pool_size: the max-pooling window, stride 2: the paper's overlapping 3 or a
        non-overlapping 2 (Section 3.4's ablation).
      activation: "relu" (the paper) or "tanh" (Section 3.1's comparison).
      removed_layers: convolutional layers left out (among conv3, conv4, conv5; Section 7's
        ablation): the next layer takes the previous one's output; conv_filters keeps five
        entries, the removed layers' unused.

    Raises:
      ValueError: a value the network cannot be built with, named with what was expected.
    """

    num_classes: int = 1000
    image_size: int = 224
    groups: int = 2
    dropout: float = 0.5
    lrn: bool = True
    lrn_bias: float = LRN_BIAS
    lrn_alpha: float = LRN_ALPHA
    conv1_padding: tuple = PAPER_CONV1_PADDING
    dropout_inputs_of: tuple = PAPER_DROPOUT_INPUTS_OF
    adaptive_pool_size: int | None = None
    weight_decay: float = 5e-4
    init: str = "paper"
    conv_filters: tuple = PAPER_CONV_FILTERS
    fc_units: int = PAPER_FC_UNITS
    pool_size: int = 3
    activation: str = "relu"
    removed_layers: tuple = ()

    def __post_init__(self):
        # Sequences become tuples (a JSON list or a flag's list compares equal to the default).
        object.__setattr__(self, "conv1_padding", tuple(int(p) for p in self.conv1_padding))
        object.__setattr__(self, "dropout_inputs_of", tuple(self.dropout_inputs_of))
        object.__setattr__(self, "conv_filters", tuple(int(f) for f in self.conv_filters))
        object.__setattr__(self, "removed_layers", tuple(self.removed_layers))
        if self.adaptive_pool_size is not None:
            object.__setattr__(self, "adaptive_pool_size", int(self.adaptive_pool_size))
        self._check()

    def _check(self):
        if self.num_classes < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={self.num_classes}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"Expected image_size >= {MIN_IMAGE_SIZE}, the smallest input that leaves pool5 "
                f"at least 1x1. Received: image_size={self.image_size}")
        if self.init not in INITS:
            raise ValueError(f"Expected init to be one of {INITS}. Received: init={self.init!r}")
        if self.groups < 1:
            raise ValueError(f"Expected groups >= 1. Received: groups={self.groups}")
        if len(self.conv_filters) != 5:
            raise ValueError(f"Expected 5 conv_filters (conv1..conv5). Received: {self.conv_filters}")
        for index, channels in enumerate(self.conv_filters):
            if channels % self.groups:
                raise ValueError(f"Expected the kernels of conv{index + 1} to be divisible by "
                                 f"groups={self.groups}. Received: {channels}")
        if len(self.conv1_padding) != 2 or min(self.conv1_padding) < 0:
            raise ValueError(f"Expected conv1_padding to be two integers >= 0. Received: {self.conv1_padding}")
        if self.image_size + sum(self.conv1_padding) < MIN_IMAGE_SIZE + sum(PAPER_CONV1_PADDING):
            raise ValueError(
                f"Expected image_size + conv1 padding >= {MIN_IMAGE_SIZE + sum(PAPER_CONV1_PADDING)}, "
                f"the smallest input that leaves pool5 at least 1x1. Received: image_size={self.image_size}, "
                f"conv1_padding={self.conv1_padding}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1. Received: dropout={self.dropout}")
        if not set(self.dropout_inputs_of) <= set(FC_LAYERS):
            raise ValueError(f"Expected dropout_inputs_of to name layers among {FC_LAYERS}. "
                             f"Received: dropout_inputs_of={self.dropout_inputs_of}")
        if self.pool_size not in POOL_SIZES:
            raise ValueError(f"Expected pool_size 3 (overlapping, the paper) or 2 (non-overlapping). "
                             f"Received: pool_size={self.pool_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Expected activation to be one of {ACTIVATIONS}. Received: activation={self.activation!r}")
        if not set(self.removed_layers) <= set(REMOVABLE_LAYERS) or len(set(self.removed_layers)) != len(
                self.removed_layers) or len(self.removed_layers) == len(REMOVABLE_LAYERS):
            raise ValueError(f"Expected removed_layers to name distinct layers among {REMOVABLE_LAYERS}, at least "
                             f"one of them kept. Received: removed_layers={self.removed_layers}")
        if self.adaptive_pool_size is not None and self.adaptive_pool_size < 1:
            raise ValueError(f"Expected adaptive_pool_size None or >= 1. Received: {self.adaptive_pool_size}")

    def replace(self, **changes):
        """A copy with `changes` (checked like a new spec)."""
        return dataclasses.replace(self, **changes)

    def to_json(self):
        """A dict of JSON types: every field, tuples as lists."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, record, *, source="the spec"):
        """The spec `to_json` wrote. A field missing from `record` (a run written before the
        field existed) takes its default, which is what that run was built with.

        Raises:
          ValueError: `record` has a key that is not a field (a newer version's spec), naming it
            and `source`.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise ValueError(f"{source} names {', '.join(unknown)}, which this version's AlexNetSpec does not "
                             f"have (fields: {', '.join(sorted(names))}). Upgrade alexnet_tf to read it.")
        return cls(**record)

    def differences(self, other, fields=None):
        """[(field, this value, other's value)] of `fields` (default all) where the two differ."""
        names = fields or [field.name for field in dataclasses.fields(self)]
        return [(name, getattr(self, name), getattr(other, name)) for name in names
                if getattr(self, name) != getattr(other, name)]
