"""Keras's torch backend: a CIFAR ResNet-32 trained in `channels_last` (the zoo's layout) against `channels_first`.

Keras's torch backend runs every `channels_last` convolution as a transpose to `(B, C, H, W)`, torch's convolution,
and a transpose back (`permute(...).contiguous()`: the `aten::copy_` calls of `benchmarks/profile_torch_step.py`).
Built in `channels_first` (one `Permute` after the `(H, W, C)` input, batch normalization on axis 1, pooling in the
same layout), the network needs none of them. This measures what that layout would buy keras-okd's torch step: one
CIFAR ResNet-32 (3 stages of 5 basic blocks, widths 16/32/64, the zoo's `resnet32`: same layers and parameter count,
written here in both layouts) trained by `fit` with cross-entropy, SGD momentum 0.9, on random CIFAR-100-shaped data.

Both models are built and warmed up first (one epoch each), then timed in interleaved rounds (the order alternating),
`--steps` steps per model and round, in one process with `--threads` torch threads. Per round: images per wall second
and per CPU second of the process (steadier on a loaded machine); printed: the medians and the median of the per-round
ratios channels_first / channels_last with their range.

    python benchmarks/torch_channels_first.py --rounds 5 --steps 6 --threads 1
"""

import argparse
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402


def resnet32(data_format, classes=100):
    """CIFAR ResNet-32 (basic blocks, 1x1 projection shortcuts where the shape changes) in the given layout."""
    axis = 1 if data_format == "channels_first" else -1

    def conv(filters, kernel, strides=1):
        return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                             kernel_initializer="he_normal", data_format=data_format)

    def bn():
        return layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5)

    def block(x, filters, strides):
        y = layers.ReLU()(bn()(conv(filters, 3, strides)(x)))
        y = bn()(conv(filters, 3)(y))
        if strides != 1 or x.shape[axis] != filters:
            x = bn()(conv(filters, 1, strides)(x))
        return layers.ReLU()(layers.Add()([x, y]))

    inputs = keras.Input((32, 32, 3))
    x = layers.Permute((3, 1, 2))(inputs) if data_format == "channels_first" else inputs
    x = layers.ReLU()(bn()(conv(16, 3)(x)))
    for stage, filters in enumerate((16, 32, 64)):
        for b in range(5):
            x = block(x, filters, 2 if stage and not b else 1)
    x = layers.GlobalAveragePooling2D(data_format=data_format)(x)
    return keras.Model(inputs, layers.Dense(classes)(x), name=f"resnet32_{data_format}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch * args.steps, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 100, args.batch * args.steps)
    models = {}
    for layout in ("channels_last", "channels_first"):
        keras.utils.set_random_seed(0)
        model = resnet32(layout)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)  # warm-up
        models[layout] = model
    counts = {layout: m.count_params() for layout, m in models.items()}
    assert len(set(counts.values())) == 1, counts

    wall = {layout: [] for layout in models}
    cpu = {layout: [] for layout in models}
    images = args.batch * args.steps
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for layout in order:
            w0, c0 = time.perf_counter(), time.process_time()
            models[layout].fit(x, y, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            wall[layout].append(images / (time.perf_counter() - w0))
            cpu[layout].append(images / (time.process_time() - c0))

    print(f"CIFAR ResNet-32 ({counts['channels_last']:,} parameters), torch backend, batch {args.batch}, "
          f"{args.rounds} interleaved rounds of {args.steps} steps, {args.threads or 'default'} thread(s)")
    print("| layout | img/s | img/CPU-s |")
    print("|---|---:|---:|")
    for layout in models:
        print(f"| {layout} | {statistics.median(wall[layout]):.1f} | {statistics.median(cpu[layout]):.1f} |")
    for name, table in (("wall", wall), ("CPU", cpu)):
        ratios = [f / l for f, l in zip(table["channels_first"], table["channels_last"])]
        print(f"channels_first / channels_last per {name} second: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
