"""benchmarks/minimal_okd_torch.py's switches to keras-okd's behaviour, one difference each, against Keras itself:
`--init keras` draws the initialisers of the zoo's `simple_cnn_8` (Glorot-uniform kernels, zero biases), `--sgd keras`
is `keras.optimizers.SGD`'s momentum rule; what both sides already share (batch-norm momentum and epsilon, the
trainable parameters); and the defaults, the script's own behaviour. No training."""

import math
import os
import runpy

import keras
import numpy as np
import pytest
import torch

import keras_okd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
script = runpy.run_path(os.path.join(ROOT, "benchmarks", "minimal_okd_torch.py"))  # its functions, main not run


def _fans(shape, channels_last):
    """`(fan_in, fan_out)` of a kernel: Keras's (kh, kw, in, out) / (in, out) or PyTorch's (out, in, kh, kw) / (out, in)."""
    receptive = math.prod(shape[:-2]) if channels_last else math.prod(shape[2:])
    inputs, outputs = (shape[-2], shape[-1]) if channels_last else (shape[1], shape[0])
    return inputs * receptive, outputs * receptive


def _torch_layers(init):
    torch.manual_seed(0)
    model = script["SimpleCNN"](8)
    if init == "keras":
        script["keras_init"](model)
    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def _zoo():
    keras.utils.set_random_seed(0)
    return keras_okd.models.get("simple_cnn_8", input_shape=(28, 28, 1))


def test_init_keras_draws_the_zoo_simple_cnn_8_initialisers():
    zoo = [layer for layer in _zoo().layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    keras_like, default = _torch_layers("keras"), _torch_layers("torch")
    glorot = [math.sqrt(6 / sum(_fans(tuple(layer.kernel.shape), True))) for layer in zoo]
    assert glorot == [math.sqrt(6 / sum(_fans(tuple(m.weight.shape), False))) for m in keras_like]
    pytorch = [1 / math.sqrt(_fans(tuple(m.weight.shape), False)[0]) for m in default]
    assert [float(f"{v:.2g}") for v in glorot] == [0.27, 0.17, 0.087]  # the figures of the script's docstring
    assert [float(f"{v:.2g}") for v in pytorch] == [0.33, 0.12, 0.036]
    for layer, mine, theirs, limit, own in zip(zoo, keras_like, default, glorot, pytorch):
        kernel = np.abs(keras.ops.convert_to_numpy(layer.kernel))
        for weights, bound in ((kernel, limit), (mine.weight.detach().abs().numpy(), limit),
                               (theirs.weight.detach().abs().numpy(), own)):
            assert 0.9 * bound < weights.max() <= bound  # uniform on (-bound, bound): its largest draw nears bound
            assert weights.mean() == pytest.approx(bound / 2, rel=0.2)  # E|U(-b, b)| = b / 2
    zoo_bias = keras.ops.convert_to_numpy(zoo[-1].bias)
    assert not zoo_bias.any() and not keras_like[-1].bias.detach().numpy().any()
    bias = default[-1].bias.detach().abs().numpy()
    assert 0 < bias.max() <= pytorch[-1]
    assert [m.bias for m in keras_like[:2]] == [None, None] == [layer.bias for layer in zoo[:2]]


def _torch_steps(kind, w0, grads, rates, decay):
    weight = torch.nn.Parameter(torch.tensor(w0))
    optimizer = script["make_optimizer"](kind, [weight], rates[0], decay)
    for g, rate in zip(grads, rates):
        for group in optimizer.param_groups:
            group["lr"] = rate
        weight.grad = torch.tensor(g)
        optimizer.step()
    return weight.detach().numpy()


@pytest.mark.heavy("torch")  # about 26 s of Keras SGD steps on TensorFlow, a few on torch: one backend suffices
def test_sgd_keras_is_keras_momentum_rule_and_torch_s_differs_only_while_the_rate_changes():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype("float32")
    grads = rng.normal(size=(6, 3, 4)).astype("float32")
    rates, decay = [0.01, 0.02, 0.03, 0.05, 0.05, 0.04], 5e-4  # a warm-up ramp, then a decay
    variable = keras.Variable(w0)
    optimizer = keras.optimizers.SGD(learning_rate=rates[0], momentum=0.9)
    for g, rate in zip(grads, rates):
        optimizer.learning_rate = rate
        # keras-okd's coupled decay: 0.5 * decay * ||w||^2 in the loss adds decay * w to the gradient
        gradient = keras.ops.convert_to_tensor(g + decay * keras.ops.convert_to_numpy(variable))
        optimizer.apply_gradients([(gradient, variable)])
    expected = keras.ops.convert_to_numpy(variable)
    np.testing.assert_allclose(_torch_steps("keras", w0, grads, rates, decay), expected, rtol=1e-5, atol=1e-6)
    moved = np.abs(_torch_steps("torch", w0, grads, rates, decay) - expected).max()
    assert moved > 1e-3  # torch.optim.SGD scales past gradients by the current rate
    constant = [0.05] * len(rates)
    np.testing.assert_allclose(_torch_steps("torch", w0, grads, constant, decay),
                               _torch_steps("keras", w0, grads, constant, decay), rtol=1e-5, atol=1e-6)
    assert isinstance(script["make_optimizer"]("torch", [torch.nn.Parameter(torch.zeros(1))], 0.1, 0.0),
                      torch.optim.SGD)


def test_batch_norm_and_parameters_are_already_the_zoo_s():
    zoo = _zoo()
    norms = [layer for layer in zoo.layers if isinstance(layer, keras.layers.BatchNormalization)]
    model = script["SimpleCNN"](8)
    mine = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [(pytest.approx(1 - m.momentum), m.eps, m.num_features) for m in mine] == [
        (layer.momentum, layer.epsilon, layer.gamma.shape[0]) for layer in norms]
    trainable = sum(math.prod(w.shape) for w in zoo.trainable_weights)
    assert trainable == sum(p.numel() for p in model.parameters()) == 9122


def test_the_defaults_keep_the_script_s_own_behaviour():
    parser = script["build_parser"]()
    args = parser.parse_args([])
    assert (args.init, args.sgd) == ("torch", "torch")
    keras_args = parser.parse_args(["--init", "keras", "--sgd", "keras"])
    assert (keras_args.init, keras_args.sgd) == ("keras", "keras")
    with pytest.raises(SystemExit):
        parser.parse_args(["--sgd", "adam"])
