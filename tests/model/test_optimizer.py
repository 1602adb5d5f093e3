import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import MomentumSGD, WeightDecay, build_alexnet
from alexnet_tf.model.optimizer import folds_every_loss, losses_to_differentiate


def _variables(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]


def _run(optimizer, steps=3):
    """Weights after `steps` updates with fixed, step-dependent gradients, in a tf.function."""
    variables = [keras.Variable(v) for v in _variables(0)]
    optimizer.build(variables)
    gradients = [_variables(step + 1) for step in range(steps)]

    @tf.function
    def apply(grads):
        optimizer.apply(grads, variables)

    for grads in gradients:
        apply([tf.constant(g) for g in grads])
    return [v.numpy() for v in variables] + [m.numpy() for m in getattr(optimizer, "momentums", [])]


@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.9, True), (0.0, False)])
def test_momentum_sgd_is_keras_sgd(momentum, nesterov):
    expected = _run(keras.optimizers.SGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov))
    actual = _run(MomentumSGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


def _run_decayed(optimizer, steps=3, decay=0.05):
    """`_run` on a kernel with a `WeightDecay` and a bias without: the L2 term's gradient
    through the tape unless the optimizer folds it into its update."""
    kernel, bias = (keras.Variable(v) for v in _variables(0))
    kernel.regularizer = WeightDecay(decay)
    variables = [kernel, bias]
    optimizer.build(variables)

    @tf.function
    def apply(grads):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(kernel * grads[0]) + tf.reduce_sum(bias * grads[1])
            if not getattr(optimizer, "fold_weight_decay", False):
                loss += kernel.regularizer(kernel)
        optimizer.apply(tape.gradient(loss, variables), variables)

    for step in range(steps):
        apply([tf.constant(g) for g in _variables(step + 1)])
    return [v.numpy() for v in variables] + [m.numpy() for m in getattr(optimizer, "momentums", [])]


@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.9, True), (0.0, False)])
def test_folded_weight_decay_is_the_l2_term_through_the_tape(momentum, nesterov):
    expected = _run_decayed(keras.optimizers.SGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov))
    actual = _run_decayed(MomentumSGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov,
                                      fold_weight_decay=True))
    # Without any decay the kernel ends elsewhere: the comparison sees the decay.
    undecayed = _run(keras.optimizers.SGD(learning_rate=0.1, momentum=momentum, nesterov=nesterov))
    assert np.abs(undecayed[0] - expected[0]).max() > 1e-3
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)


def test_folded_weight_decay_is_the_papers_rule_by_hand():
    # v <- 0.9 v - wd lr w - lr g ; w <- w + v on the kernel; the bias is not decayed.
    weights, velocity = _variables(0), [np.zeros((5, 3), np.float32), np.zeros(3, np.float32)]
    for step in range(3):
        velocity = [0.9 * v - d * 0.1 * w - 0.1 * g
                    for v, d, w, g in zip(velocity, (0.05, 0.0), weights, _variables(step + 1))]
        weights = [w + v for w, v in zip(weights, velocity)]
    folded = _run_decayed(MomentumSGD(learning_rate=0.1, momentum=0.9, fold_weight_decay=True))
    for a, e in zip(folded, weights + velocity):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_losses_to_differentiate_leave_out_only_what_the_optimizer_folds():
    model = build_alexnet(4, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=8, seed=0)
    assert folds_every_loss(model) and len(model.losses) == 8
    folding = MomentumSGD(learning_rate=0.1, momentum=0.9, fold_weight_decay=True)
    assert losses_to_differentiate(model, folding) == []
    assert losses_to_differentiate(model, keras.optimizers.LossScaleOptimizer(folding)) == []
    for optimizer in (MomentumSGD(learning_rate=0.1, momentum=0.9), keras.optimizers.SGD(0.1)):
        assert len(losses_to_differentiate(model, optimizer)) == 8
    # Another regularizer cannot be folded: a clear error, not a silently missing term.
    model.get_layer("fc7").kernel.regularizer = keras.regularizers.L1(1e-3)
    assert not folds_every_loss(model)
    with pytest.raises(ValueError, match="fold_weight_decay=False"):
        losses_to_differentiate(model, folding)


def test_momentum_sgd_is_the_papers_rule_by_hand():
    # m <- 0.9 m - lr g ; w <- w + m, three steps.
    weights, velocity = _variables(0), [np.zeros((5, 3), np.float32), np.zeros(3, np.float32)]
    for step in range(3):
        velocity = [0.9 * v - 0.1 * g for v, g in zip(velocity, _variables(step + 1))]
        weights = [w + v for w, v in zip(weights, velocity)]
    for a, e in zip(_run(MomentumSGD(learning_rate=0.1, momentum=0.9)), weights + velocity):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fold", [False, True])
def test_momentum_sgd_updates_every_replica_alike_under_mirrored_strategy(fold):
    # No collectives: the process-wide collective executor remembers instance keys, and a
    # later MirroredStrategy in this process (the training tests') would reuse them.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    decay = 0.05 if fold else 0.0
    with strategy.scope():
        variables = [keras.Variable(v) for v in _variables(0)]
        variables[0].regularizer = WeightDecay(decay) if fold else None
        optimizer = MomentumSGD(learning_rate=0.1, momentum=0.9, fold_weight_decay=fold)
        optimizer.build(variables)

    @tf.function
    def step(grads):
        def replica_fn():
            # Replica r's gradient is (r + 1) * g: the all-reduced sum is 3 * g.
            scale = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group + 1, tf.float32)
            optimizer.apply([scale * g for g in grads], variables)
        strategy.run(replica_fn)

    for s in range(3):
        step([tf.constant(g) for g in _variables(s + 1)])
    single = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    expected_variables = [keras.Variable(v) for v in _variables(0)]
    single.build(expected_variables)
    for s in range(3):
        kernel_grad, bias_grad = _variables(s + 1)
        # The decay is added once, after the replicas' sum.
        kernel_grad = 3 * kernel_grad + decay * expected_variables[0].numpy()
        single.apply([tf.constant(kernel_grad), tf.constant(3 * bias_grad)], expected_variables)
    for variable, expected in zip(variables, expected_variables):
        components = strategy.experimental_local_results(variable.value)
        assert len(components) == 2
        for component in components:
            np.testing.assert_allclose(component.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    for momentum, expected in zip(optimizer.momentums, single.momentums):
        for component in strategy.experimental_local_results(momentum.value):
            np.testing.assert_allclose(component.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_weight_decay_value_and_gradient():
    w = tf.Variable(np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32))
    decay = WeightDecay(5e-4)
    with tf.GradientTape() as tape:
        value = decay(w)
    # 0.0005 * ||w||^2 / 2, whose gradient is the paper's 0.0005 * w.
    assert float(value) == pytest.approx(5e-4 * float(np.sum(w.numpy() ** 2)) / 2, rel=1e-6)
    np.testing.assert_allclose(tape.gradient(value, w), 5e-4 * w.numpy(), rtol=1e-6)
    assert float(keras.regularizers.L2(2.5e-4)(w)) == pytest.approx(float(value), rel=1e-6)
    with pytest.raises(ValueError, match="weight_decay"):
        WeightDecay(-1.0)


def test_model_with_weight_decay_reloads_without_custom_objects(tmp_path):
    model = build_alexnet(4, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=8, seed=0)
    path = tmp_path / "alexnet.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    regularizer = reloaded.get_layer("fc6").kernel_regularizer
    assert isinstance(regularizer, WeightDecay) and regularizer.weight_decay == 5e-4
    np.testing.assert_allclose(sum(float(l) for l in reloaded.losses), sum(float(l) for l in model.losses),
                               rtol=1e-6)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32) * 50
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-5, atol=1e-5)
    # The optimizer round-trips through its config too.
    restored = MomentumSGD.from_config(MomentumSGD(learning_rate=0.02, momentum=0.8, nesterov=True,
                                                   fold_weight_decay=True).get_config())
    assert (float(restored.learning_rate), restored.momentum, restored.nesterov) == pytest.approx((0.02, 0.8, True))
    assert restored.fold_weight_decay


def test_runs_saved_with_keras_sgd_resume_with_momentum_sgd(tmp_path):
    # Run directories written before MomentumSGD hold Keras SGD's variables: they restore.
    variables = [keras.Variable(v) for v in _variables(0)]
    old = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    old.apply([tf.constant(g) for g in _variables(1)], variables)
    path = tf.train.Checkpoint(optimizer=old, weights=variables).write(str(tmp_path / "ckpt"))

    restored_variables = [keras.Variable(np.zeros_like(v)) for v in _variables(0)]
    new = MomentumSGD(learning_rate=0.5, momentum=0.9)
    new.build(restored_variables)
    status = tf.train.Checkpoint(optimizer=new, weights=restored_variables).read(path)
    status.assert_existing_objects_matched()
    for new_momentum, old_momentum in zip(new.momentums, old.momentums):
        np.testing.assert_array_equal(new_momentum.numpy(), old_momentum.numpy())
    assert int(new.iterations.numpy()) == 1 and float(new.learning_rate) == pytest.approx(0.1)
