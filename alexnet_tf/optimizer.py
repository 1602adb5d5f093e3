"""The paper's learning rule (Section 5) as Keras objects, each in as few passes over memory
as TensorFlow allows:

    v <- 0.9 v - 0.0005 * lr * w - lr * dL/dw ;  w <- w + v

`WeightDecay` is the L2 term whose gradient is 0.0005 * w (so the decay enters the momentum,
as in the paper); `MomentumSGD` is Keras' SGD computed by one fused kernel per variable.
AlexNet has 61 M parameters, so every extra elementwise pass over them costs a full read or
write of 244 MB per step.
"""

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


@keras.saving.register_keras_serializable(package="alexnet_tf")
class MomentumSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with momentum, each variable updated by one fused kernel.

    The same update and the same variables (and so the same checkpoints) as Keras' SGD:
    m <- momentum * m - lr * g ; w <- w + m (Nesterov: w <- w + momentum * m - lr * g),
    computed by TensorFlow's ResourceApplyKerasMomentum instead of five separate
    elementwise ops, each of which reads or writes every weight. Arguments as Keras' SGD.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        variable = variable.value if isinstance(variable, keras.Variable) else variable
        # Inside a tf.distribute update, `.handle` is the component on the current device.
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=momentum.value.handle,
            lr=tf.cast(learning_rate, variable.dtype),
            grad=tf.cast(gradient, variable.dtype),
            momentum=tf.cast(self.momentum, variable.dtype),
            use_locking=False,
            use_nesterov=self.nesterov,
        )
