"""keras-okd on the Fashion-MNIST recipe, with per-epoch collapse signals: the keras-okd arm of the side-by-side with
benchmarks/minimal_okd_torch.py (same flags, same output).

Two `simple_cnn` students (width 16) on 28x28x1, a stratified subset of --train-size training images
(`keras_okd.data.fashion_mnist`, subset seed 0), scored on the 10,000 test images; SGD momentum 0.9, coupled weight
decay 5e-4 (`compile(coupled_weight_decay=)`), batch 128, cosine decay of the learning rate to 0 per step (or per
epoch). After every epoch it prints, per peer, what `keras_okd.callbacks.PeerCollapse` reads: `{peer}_ce` (against
ln C), `{peer}_accuracy` (against 1/C) and `{peer}_logit_std`, and the test accuracy; the monitor is attached and the
last line says whom it warned about. The measurements behind the monitor's thresholds came from this script.

Things the side-by-side varies one at a time:
  --init keras|torch       Keras's initialisers (the zoo's), or PyTorch's defaults (kaiming-uniform a=sqrt(5):
                           U(+-1/sqrt(fan_in)) kernels, and U(+-1/sqrt(fan_in)) dense bias); torch_conv and
                           torch_dense apply PyTorch's to the convolutions only or to the classifier only
  --augment pad|translate  pad-2 random crop with whole-pixel shifts + flip (the loader's "standard"), or Keras's
                           RandomTranslation(2/28, bilinear, zero fill) + RandomFlip (interpolated shifts)
  --lr-step step|epoch     cosine per optimizer step, or constant within an epoch

    KERAS_BACKEND=tensorflow python benchmarks/fashion_mnist_recipe.py --method dml --lr 0.01 --epochs 15
    KERAS_BACKEND=tensorflow python benchmarks/fashion_mnist_recipe.py --method dml --lr 0.05 --epochs 3
"""

import argparse
import json
import math
import time

import keras
import numpy as np

import keras_okd


def torch_like_init(model, seed, kinds=(keras.layers.Conv2D, keras.layers.Dense)):
    """Re-draw kernels and dense biases as PyTorch's Conv2d/Linear defaults do: U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    for the layers of the given kinds."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, kinds):
            kernel = layer.kernel
            fan_in = int(np.prod(kernel.shape[:-1]))
            bound = 1.0 / math.sqrt(fan_in)
            kernel.assign(rng.uniform(-bound, bound, kernel.shape).astype("float32"))
            if layer.use_bias:
                layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype("float32"))


def data(args):
    if args.augment == "pad":
        return keras_okd.data.fashion_mnist(batch_size=args.batch_size, seed=args.seed, train_size=args.train_size)
    import tensorflow as tf

    (x, y), (xt, yt) = keras_okd.data.fashion_mnist_arrays(train_size=args.train_size)
    views = keras.Sequential([keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant",
                                                             interpolation="bilinear", seed=args.seed),
                              keras.layers.RandomFlip("horizontal", seed=args.seed)])
    train = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((x, y)), args.batch_size, training=True,
                                    augment=views, seed=args.seed)
    test = keras_okd.data.pipeline(tf.data.Dataset.from_tensor_slices((xt, yt)), args.batch_size, training=False)
    return train, test, len(y)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="dml", choices=["independent", "dml", "tsb"])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=16, help="simple_cnn width")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="TSB's KD warm-up epochs")
    parser.add_argument("--init", default="keras", choices=["keras", "torch", "torch_conv", "torch_dense"])
    parser.add_argument("--augment", default="pad", choices=["pad", "translate"])
    parser.add_argument("--lr-step", default="step", choices=["step", "epoch"])
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    train, test, n = data(args)
    students = [keras_okd.models.get("simple_cnn", num_classes=10, input_shape=(28, 28, 1), width=args.width)
                for _ in range(2)]
    if args.init != "keras":
        kinds = {"torch": (keras.layers.Conv2D, keras.layers.Dense), "torch_conv": (keras.layers.Conv2D,),
                 "torch_dense": (keras.layers.Dense,)}[args.init]
        for i, student in enumerate(students):
            torch_like_init(student, args.seed * 100 + i, kinds)
    kwargs = {"num_train_samples": n, "warmup_epochs": args.warmup} if args.method == "tsb" else {}
    distiller = keras_okd.methods.get(args.method)(students, **kwargs)
    steps = math.ceil(n / args.batch_size)
    callbacks = []
    if args.lr_step == "step":
        lr = keras.optimizers.schedules.CosineDecay(args.lr, steps * args.epochs)
    else:
        lr = args.lr
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: args.lr * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))))
    distiller.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), coupled_weight_decay=5e-4)
    monitor = keras_okd.callbacks.PeerCollapse()

    class Show(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            cells = [f"{p}: ce {logs[f'{p}_ce']:.4f} acc {logs[f'{p}_accuracy']:.4f} "
                     f"logit_std {logs[f'{p}_logit_std']:.4f} test {logs[f'val_{p}_accuracy']:.4f}"
                     for p in distiller.peer_names]
            print(f"epoch {epoch + 1}: " + " | ".join(cells) + f" | ens {logs['val_ensemble_accuracy']:.4f}",
                  flush=True)

    start = time.time()
    history = distiller.fit(train, validation_data=test, epochs=args.epochs, verbose=0,
                            callbacks=callbacks + [Show(), monitor]).history
    seconds = time.time() - start
    accuracies = [round(100 * history[f"val_{p}_accuracy"][-1], 2) for p in distiller.peer_names]
    print(f"ln C = {math.log(10):.4f}; {args.method} lr {args.lr}; {seconds:.0f} s; monitor warned for: "
          f"{monitor.warned or 'none'}")
    print(json.dumps({"implementation": f"keras-okd ({keras.backend.backend()})", "method": args.method,
                      "lr": args.lr, "epochs": args.epochs, "train_size": args.train_size, "init": args.init,
                      "augment": args.augment, "lr_step": args.lr_step, "width": args.width, "seed": args.seed,
                      "students": accuracies, "ensemble": round(100 * history["val_ensemble_accuracy"][-1], 2),
                      "mean_student": round(float(np.mean(accuracies)), 2), "seconds": round(seconds, 1),
                      "params_per_student": sum(int(np.prod(w.shape)) for w in students[0].trainable_weights),
                      "collapse_warnings": {k: list(v) for k, v in monitor.warned.items()}}))


if __name__ == "__main__":
    main()
