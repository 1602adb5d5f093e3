import numpy as np
import pytest
import tensorflow as tf
import keras

from alexnet_tf import MIN_IMAGE_SIZE, MomentumSGD, build_alexnet
from alexnet_tf.model.optimizer import losses_to_differentiate

PAPER_LAYER_NAMES = ["conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4",
                     "conv5", "pool5", "fc6", "drop6", "fc7", "drop7", "fc8"]

# Tiny widths through the model's own arguments keep these tests fast.
TINY = dict(conv_filters=(8, 8, 8, 8, 8), fc_units=16)


def test_parameter_counts_are_the_papers():
    # groups=2, weights + biases:
    # conv1 11*11*3*96 + 96        =     34,944
    # conv2  5*5*48*256 + 256      =    307,456   (each kernel sees 48 of the 96 maps)
    # conv3  3*3*256*384 + 384     =    885,120
    # conv4  3*3*192*384 + 384     =    663,936
    # conv5  3*3*192*256 + 256     =    442,624
    # fc6   6*6*256*4096 + 4096    = 37,752,832
    # fc7   4096*4096 + 4096       = 16,781,312
    # fc8   4096*1000 + 1000       =  4,097,000
    # total                          60,965,224
    assert build_alexnet(1000).count_params() == 60_965_224
    # groups=1 doubles the input depth of conv2, conv4, conv5:
    # + 5*5*48*256 + 3*3*192*384 + 3*3*192*256 = 307,200 + 663,552 + 442,368 = 1,413,120
    assert build_alexnet(1000, groups=1).count_params() == 60_965_224 + 1_413_120 == 62_378_344


def test_layer_names_and_shapes_from_224():
    model = build_alexnet(1000)
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n in PAPER_LAYER_NAMES] == PAPER_LAYER_NAMES
    shape = lambda name: tuple(model.get_layer(name).output.shape[1:])  # noqa: E731
    assert shape("conv1") == (55, 55, 96)
    assert shape("pool1") == (27, 27, 96)
    assert shape("conv2") == (27, 27, 256)
    assert shape("pool2") == (13, 13, 256)
    assert shape("conv3") == (13, 13, 384)
    assert shape("conv5") == (13, 13, 256)
    assert shape("pool5") == (6, 6, 256)
    assert shape("fc8") == (1000,)
    assert model.get_layer("conv2").kernel.shape == (5, 5, 48, 256)
    assert model.get_layer("conv3").kernel.shape == (3, 3, 256, 384)
    assert model.get_layer("conv4").kernel.shape == (3, 3, 192, 384)
    assert model.get_layer("drop6").rate == 0.5 and model.get_layer("drop7").rate == 0.5


def test_paper_init():
    model = build_alexnet(1000, seed=0)
    for layer_name in ("conv1", "conv3", "fc6", "fc8"):
        kernel = model.get_layer(layer_name).kernel.numpy()
        assert abs(kernel.mean()) < 1e-3
        assert kernel.std() == pytest.approx(0.01, rel=0.03)
    for layer_name, bias in [("conv1", 0), ("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1),
                             ("fc6", 1), ("fc7", 1), ("fc8", 0)]:
        np.testing.assert_array_equal(model.get_layer(layer_name).bias.numpy(), bias)


def test_he_init_option():
    model = build_alexnet(10, image_size=64, init="he", seed=0, **TINY)
    kernel = model.get_layer("conv3").kernel.numpy()  # fan_in = 3*3*8
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / 72), rel=0.15)
    np.testing.assert_array_equal(model.get_layer("conv2").bias.numpy(), 0.0)


def test_small_images_build_and_too_small_is_a_clear_error():
    model = build_alexnet(10, image_size=128, **TINY)
    assert tuple(model.get_layer("pool5").output.shape[1:]) == (3, 3, 8)
    assert model(np.zeros((2, 128, 128, 3), np.float32)).shape == (2, 10)
    build_alexnet(10, image_size=MIN_IMAGE_SIZE, **TINY)
    with pytest.raises(ValueError, match=f"image_size >= {MIN_IMAGE_SIZE}.*Received: image_size=63"):
        build_alexnet(10, image_size=63, **TINY)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match="init.*'xavier'"):
        build_alexnet(10, image_size=64, init="xavier", **TINY)
    with pytest.raises(ValueError, match="divisible by groups=3"):
        build_alexnet(10, image_size=64, groups=3, **TINY)


def test_lrn_off_is_an_identity_for_ablations():
    model = build_alexnet(10, image_size=64, lrn=False, **TINY)
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer("conv1").output, model.get_layer("norm1").output])
    conv1, norm1 = probe(x)
    np.testing.assert_array_equal(conv1, norm1)


def test_logits_out_and_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_alexnet(10, image_size=64, **TINY)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("conv1").compute_dtype == "float16"
    logits = model(np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32) * 50)
    assert logits.dtype == tf.float32
    # Logits, not probabilities: rows do not sum to 1 and values may be negative.
    assert model.layers[-1].activation.__name__ == "linear"


@pytest.mark.parametrize("optimizer_class,fold", [(keras.optimizers.SGD, False), (MomentumSGD, False),
                                                  (MomentumSGD, True)])
def test_one_sgd_step_is_the_papers_update_rule(optimizer_class, fold):
    """v <- 0.9 v - 0.0005 lr w - lr dL/dw ; w <- w + v (Section 5), over two steps."""
    # A decay larger than the paper's 0.0005 so its term (decay * lr * w ~ 5e-5) stands far
    # above float32 noise; the rule is the same.
    lr, momentum, decay = 0.1, 0.9, 0.05
    model = build_alexnet(5, image_size=64, dropout=0.0, weight_decay=decay, seed=1, **TINY)
    kwargs = dict(fold_weight_decay=True) if fold else {}
    optimizer = optimizer_class(learning_rate=lr, momentum=momentum, **kwargs)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 64, 64, 3)).astype(np.float32) * 30
    y = np.array([0, 1, 2, 3], np.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def training_library_step():  # the training library's: the optimizer applies the decay
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            regularization = losses_to_differentiate(model, optimizer)
            if regularization:
                loss += tf.add_n(regularization)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    def data_gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))  # the data term only
        return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

    decays = [decay if "kernel" in v.path else 0.0 for v in model.trainable_variables]
    assert sum(d > 0 for d in decays) == 8  # conv1..conv5, fc6..fc8 kernels; no biases
    weights = [v.numpy() for v in model.trainable_variables]
    velocity = [np.zeros_like(w) for w in weights]
    for _ in range(2):
        grads = data_gradients()
        velocity = [momentum * v - d * lr * w - lr * g
                    for v, d, w, g in zip(velocity, decays, weights, grads)]
        without_decay = [w + momentum * v - lr * g for w, v, g in zip(weights, velocity, grads)]
        weights = [w + v for w, v in zip(weights, velocity)]
        if fold:
            training_library_step()
        else:
            model.train_on_batch(x, y)
        for expected, variable in zip(weights, model.trainable_variables):
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-7)
        # The decay term is really there: fc6's kernel is not what the data alone gives.
        fc6 = [i for i, v in enumerate(model.trainable_variables) if v.path == "fc6/kernel"][0]
        assert np.abs(model.trainable_variables[fc6].numpy() - without_decay[fc6]).max() > 1e-5


def test_flop_counts_of_the_paper_model():
    model = build_alexnet(1000)
    # conv1: 2 * 55*55 outputs * 11*11*3 inputs * 96 kernels = 210,830,400; the whole
    # forward pass is 1,448,813,632 FLOPs (~0.72 G multiply-adds, the usual AlexNet figure).
    from alexnet_tf import count_flops, count_training_flops

    assert count_flops(model) == 1_448_813_632
    assert count_training_flops(model, batch_size=2) == 2 * (3 * 1_448_813_632 - 210_830_400)


def test_dropout_placement_and_the_adaptive_pool_are_options():
    paper = build_alexnet(10, image_size=64, conv_filters=(8, 8, 8, 8, 8), fc_units=16)
    names = [layer.name for layer in paper.layers]
    assert names.index("drop6") == names.index("fc6") + 1 and names.index("drop7") == names.index("fc7") + 1
    assert "avgpool" not in names
    # torchvision's: dropout in front of fc6 and fc7, and the adaptive pool after pool5.
    tv = build_alexnet(10, image_size=96, conv_filters=(8, 8, 8, 8, 8), fc_units=16, dropout_inputs_of=("fc6", "fc7"),
                       adaptive_pool_size=6, groups=1, lrn=False, conv1_padding=(2, 2))
    names = [layer.name for layer in tv.layers]
    assert names.index("drop5") == names.index("fc6") - 1 and names.index("drop6") == names.index("fc7") - 1
    assert tv.get_layer("avgpool").output.shape[1:] == (6, 6, 8) and tv.get_layer("fc6").kernel.shape == (288, 16)
    with pytest.raises(ValueError, match=r"dropout_inputs_of to name layers among \('fc6', 'fc7', 'fc8'\)"):
        build_alexnet(10, image_size=64, dropout_inputs_of=("pool5",))
