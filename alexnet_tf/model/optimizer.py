"""The paper's learning rule (Section 5) as Keras objects, each in as few passes over memory
as TensorFlow allows:

    v <- 0.9 v - 0.0005 * lr * w - lr * dL/dw ;  w <- w + v

`WeightDecay` is the L2 term whose gradient is 0.0005 * w (so the decay enters the momentum,
as in the paper); `MomentumSGD` is Keras' SGD computed by one fused kernel per variable, and
with `fold_weight_decay=True` it adds that gradient itself, inside the same kernel.
AlexNet has 61 M parameters, so every extra elementwise pass over them costs a full read or
write of 244 MB per step.
"""

import functools

import tensorflow as tf
import keras


@keras.saving.register_keras_serializable(package="alexnet_tf")
class WeightDecay(keras.regularizers.Regularizer):
    """weight_decay * ||w||^2 / 2, whose gradient is exactly weight_decay * w.

    The same value as `keras.regularizers.L2(weight_decay / 2)`, computed by one
    `tf.nn.l2_loss` kernel (no squared copy of the weights) whose gradient is one
    multiplication (Keras' L2 also broadcasts the scalar to the weights' shape first).

    Args:
      weight_decay: the paper's 0.0005.
    """

    def __init__(self, weight_decay):
        if weight_decay < 0:
            raise ValueError(f"Expected weight_decay >= 0. Received: weight_decay={weight_decay}")
        self.weight_decay = float(weight_decay)

    def __call__(self, weights):
        return self.weight_decay * tf.nn.l2_loss(weights)

    def get_config(self):
        return {"weight_decay": self.weight_decay}


@functools.cache
def _decayed_update(momentum_rate, nesterov):
    """One XLA loop per variable: g' = g + weight_decay * w, then Keras' SGD rule with g'."""

    @tf.function(jit_compile=True, autograph=False)
    def update(variable, momentum, gradient, learning_rate, weight_decay):
        gradient = gradient + weight_decay * variable
        if momentum is None:
            variable.assign_sub(learning_rate * gradient)
            return
        velocity = momentum_rate * momentum - learning_rate * gradient
        momentum.assign(velocity)
        if nesterov:
            variable.assign_add(momentum_rate * velocity - learning_rate * gradient)
        else:
            variable.assign_add(velocity)

    return update


@keras.saving.register_keras_serializable(package="alexnet_tf")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with momentum, each variable updated by one fused kernel.

    The same update and the same variables (and so the same checkpoints) as Keras' SGD:
    m <- momentum * m - lr * g ; w <- w + m (Nesterov: w <- w + momentum * m - lr * g),
    computed by TensorFlow's ResourceApplyKerasMomentum instead of five separate
    elementwise ops, each of which reads or writes every weight.

    Args:
      fold_weight_decay: if True, a variable whose `regularizer` is a `WeightDecay` gets that
        regularizer's gradient (weight_decay * w) added to its gradient inside its update, in
        one XLA loop: the paper's v <- 0.9 v - 0.0005 lr w - lr g in a single pass over the
        weights, instead of the L2 term's forward, its gradient and the sum of the two
        gradients. The loss the caller differentiates must then leave those terms out (else
        the decay counts twice): `losses_to_differentiate` says what to add.
      Others: as Keras' SGD.
    """

    def __init__(self, *args, fold_weight_decay=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fold_weight_decay = bool(fold_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        # `variable` is TensorFlow's, which carries no regularizer; the Keras one does.
        weight_decay = _weight_decay(self._trainable_variables[index]) if self.fold_weight_decay else 0.0
        if not weight_decay and (self.momentum == 0 or isinstance(gradient, tf.IndexedSlices)):
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[index].value if self.momentum else None
        # Inside a tf.distribute update, this is the component on the current device.
        variable = variable.value if isinstance(variable, keras.Variable) else variable
        dtype = variable.dtype
        gradient = tf.cast(tf.convert_to_tensor(gradient), dtype)  # decay makes it dense anyway
        learning_rate = tf.cast(learning_rate, dtype)
        if weight_decay:
            _decayed_update(self.momentum, self.nesterov)(
                variable, momentum, gradient, learning_rate, tf.constant(weight_decay, dtype))
            return
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=momentum.handle,
            lr=learning_rate,
            grad=gradient,
            momentum=tf.constant(self.momentum, dtype),
            use_locking=False,
            use_nesterov=self.nesterov,
        )

    def get_config(self):
        config = super().get_config()
        config["fold_weight_decay"] = self.fold_weight_decay
        return config


def _weight_decay(variable):
    regularizer = getattr(variable, "regularizer", None)
    return regularizer.weight_decay if isinstance(regularizer, WeightDecay) else 0.0


def folds_every_loss(model):
    """Whether `MomentumSGD(fold_weight_decay=True)` applies all of `model.losses`: they are
    exactly its variables' `WeightDecay` terms (no other regularizer, no `add_loss`)."""
    regularized = [v for v in model.trainable_variables if v.regularizer is not None]
    return (all(isinstance(v.regularizer, WeightDecay) for v in regularized)
            and len(model.losses) == len(regularized))


def losses_to_differentiate(model, optimizer):
    """The terms of `model.losses` whose gradient the caller's tape must compute: all of them,
    or none when the optimizer (or the one a LossScaleOptimizer wraps) is a `MomentumSGD`
    with `fold_weight_decay=True`, which applies `WeightDecay` terms itself. ValueError if it
    folds but the model has other losses (`folds_every_loss`)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, MomentumSGD) and inner.fold_weight_decay:
        if not folds_every_loss(model):
            raise ValueError(
                f"MomentumSGD(fold_weight_decay=True) applies only WeightDecay regularizers, but "
                f"model {model.name!r} has other losses. Use fold_weight_decay=False.")
        return []
    return model.losses
