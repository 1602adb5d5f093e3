"""The paper's learning rule (Section 5) as Keras objects, each in as few passes over memory
as TensorFlow allows:

    v <- 0.9 v - 0.0005 * lr * w - lr * dL/dw ;  w <- w + v

`WeightDecay` is the L2 term whose gradient is 0.0005 * w (so the decay enters the momentum,
as in the paper); `MomentumSGD` is Keras' SGD computed by one fused kernel per variable, and
with `fold_weight_decay=True` it adds that gradient itself, inside the same kernel.
AlexNet has 61 M parameters, so every extra elementwise pass over them costs a full read or
write of 244 MB per step.
"""

import contextlib
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
        self._caller_reduced_gradients = False

    @contextlib.contextmanager
    def gradients_reduced_by_caller(self):
        """While open (at trace time), `apply` takes gradients already summed across
        replicas and does not all-reduce them again."""
        self._caller_reduced_gradients = True
        try:
            yield
        finally:
            self._caller_reduced_gradients = False

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if self._caller_reduced_gradients:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

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


def all_reduce_sum(gradients):
    """The gradients summed over the replicas of the current replica context (themselves
    outside any strategy); None entries stay None."""
    context = tf.distribute.get_replica_context()
    present = [g for g in gradients if g is not None]
    if context is None or not present:
        return list(gradients)
    reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(reduced) for g in gradients]


@keras.saving.register_keras_serializable(package="alexnet_tf")
class AllReduceLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling (float16), with one decision for all replicas.

    Keras' `LossScaleOptimizer` decides "gradients finite" before the gradients are summed
    across replicas, from one replica's own gradients (with merge_call, the first replica's;
    without, each its own): an overflow on another replica reaches the shared weights through
    the sum, and under XLA the replicas can take different branches around the inner
    optimizer's collective. This one sums the scaled gradients over the replicas first (the
    one all-reduce of the step), decides from the sum, which is the same tensor on every
    replica (an Inf or NaN anywhere makes it non-finite everywhere), and has the inner
    `MomentumSGD` apply the summed gradients without reducing them again. So every replica
    skips or applies together: a skipped step changes no weight and halves the scale; 2000
    finite steps in a row double it (Keras' rule). Same variables as Keras' class.
    """

    def __init__(self, inner_optimizer, **kwargs):
        if not isinstance(inner_optimizer, MomentumSGD):
            raise TypeError(f"Expected a MomentumSGD to wrap. Received: {type(inner_optimizer).__name__}")
        super().__init__(inner_optimizer, **kwargs)

    def apply(self, grads, trainable_variables=None):
        reduced = all_reduce_sum(list(grads))
        with self.inner_optimizer.gradients_reduced_by_caller():
            return super().apply(reduced, trainable_variables)


def _weight_decay(variable):
    regularizer = getattr(variable, "regularizer", None)
    return regularizer.weight_decay if isinstance(regularizer, WeightDecay) else 0.0


def folds_every_loss(model):
    """Whether `MomentumSGD(fold_weight_decay=True)` applies all of `model.losses`: they are
    exactly its variables' `WeightDecay` terms (no other regularizer, no `add_loss`)."""
    regularized = [v for v in model.trainable_variables if v.regularizer is not None]
    return (all(isinstance(v.regularizer, WeightDecay) for v in regularized)
            and len(model.losses) == len(regularized))


def base_optimizer(optimizer):
    """The optimizer that holds the learning rate and the slots: the one a
    `keras.optimizers.LossScaleOptimizer` wraps, or `optimizer` itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def losses_to_differentiate(model, optimizer):
    """The terms of `model.losses` whose gradient the caller's tape must compute: all of them,
    or none when the optimizer (or the one a LossScaleOptimizer wraps) is a `MomentumSGD`
    with `fold_weight_decay=True`, which applies `WeightDecay` terms itself. ValueError if it
    folds but the model has other losses (`folds_every_loss`)."""
    inner = base_optimizer(optimizer)
    if isinstance(inner, MomentumSGD) and inner.fold_weight_decay:
        if not folds_every_loss(model):
            raise ValueError(
                f"MomentumSGD(fold_weight_decay=True) applies only WeightDecay regularizers, but "
                f"model {model.name!r} has other losses. Use fold_weight_decay=False.")
        return []
    return model.losses
