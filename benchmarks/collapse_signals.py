"""Per-epoch collapse signals of each peer: training cross-entropy, accuracy and logit spread (std over classes).

Trains two zoo students with one method (SGD momentum 0.9, coupled weight decay 5e-4, per-step cosine decay of the
learning rate) and prints, after every epoch, what `keras_okd.callbacks.PeerCollapse` reads: `{peer}_ce` (against
ln C), `{peer}_accuracy` (against 1/C) and `{peer}_logit_std`, plus the validation accuracies; the monitor is attached
and says when it warns. The measurements behind the monitor's thresholds came from this script.

    KERAS_BACKEND=tensorflow python benchmarks/collapse_signals.py --method dml --lr 0.05 --epochs 3
    KERAS_BACKEND=tensorflow python benchmarks/collapse_signals.py --dataset digits --method dml --lr 0.05 --epochs 20
"""

import argparse
import math
import time

import keras

import keras_okd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "digits"])
    parser.add_argument("--method", default="dml", help="independent, dml or tsb")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=20_000, help="Fashion-MNIST training subset")
    parser.add_argument("--width", type=int, default=16, help="simple_cnn width")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="TSB's KD warm-up epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    if args.dataset == "digits":
        train, test, n = keras_okd.data.get("digits", batch_size=args.batch_size, seed=args.seed)
        shape = (8, 8, 1)
    else:
        train, test, n = keras_okd.data.get("fashion_mnist", batch_size=args.batch_size, seed=args.seed,
                                            train_size=args.train_size)
        shape = (28, 28, 1)
    students = [keras_okd.models.get("simple_cnn", num_classes=10, input_shape=shape, width=args.width)
                for _ in range(2)]
    kwargs = {"num_train_samples": n, "warmup_epochs": args.warmup} if args.method == "tsb" else {}
    distiller = keras_okd.methods.get(args.method)(students, **kwargs)
    steps = math.ceil(n / args.batch_size) * args.epochs
    lr = keras.optimizers.schedules.CosineDecay(args.lr, steps) if args.schedule == "cosine" else args.lr
    distiller.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), coupled_weight_decay=5e-4)
    monitor = keras_okd.callbacks.PeerCollapse()

    class Show(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            cells = [f"{p}: ce {logs[f'{p}_ce']:.4f} acc {logs[f'{p}_accuracy']:.4f} "
                     f"logit_std {logs[f'{p}_logit_std']:.4f} val {logs[f'val_{p}_accuracy']:.4f}"
                     for p in distiller.peer_names]
            print(f"epoch {epoch + 1}: " + " | ".join(cells), flush=True)

    start = time.time()
    distiller.fit(train, validation_data=test, epochs=args.epochs, verbose=0, callbacks=[Show(), monitor])
    print(f"ln C = {math.log(10):.4f}; {args.method} lr {args.lr}; {time.time() - start:.0f} s; monitor warned for: "
          f"{sorted(monitor.warned) or 'none'}")


if __name__ == "__main__":
    main()
