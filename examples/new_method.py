"""A new online-KD method in one file: a knowledge part, a preset, and one `register` call.

    python examples/new_method.py --smoke                        # trains it from Python
    keras-okd train --config examples/new_method.yaml --set epochs=1 --run-dir /tmp/new_method   # ... from YAML

The method here, "confident peer": each student learns from whichever peer is most confident on the sample (the
largest top-1 probability), a simple variant of KDCL's "naive" teacher. The part returns soft targets (a
`PartOutput`) and owns its warm-up; the distiller adds `tau^2 KL(target || student)` per peer, logs it as
`student_{i}_confident`, and handles weights, schedules, saving and every backend. `examples/new_method.yaml`
lists this file under `imports:`, which registers the method for the config and the CLI.
"""

import argparse

import keras
from keras import ops

import keras_okd
from keras_okd.losses import soften


@keras.saving.register_keras_serializable(package="examples")
class ConfidentPeer(keras_okd.knowledge.KnowledgePart):
    """Every peer learns from the most confident peer's softened prediction on each sample (itself included: its
    term is then zero)."""

    def targets(self, peer_logits, context):
        probs = soften(peer_logits, self.temperature)                                   # (B, M, C)
        best = ops.argmax(ops.max(soften(peer_logits), axis=-1), axis=-1)               # (B,) most confident peer
        target = ops.take_along_axis(probs, ops.reshape(best, (-1, 1, 1)), axis=1)      # (B, 1, C)
        weights = ops.ones((self.num_peers, 1))                                         # every peer learns from it
        return keras_okd.knowledge.PartOutput(targets=ops.stop_gradient(target), pair_weights=weights)


@keras_okd.methods.register("confident_peer", overwrite=True)
def confident_peer(students, temperature=3.0, weight=1.0, warmup_epochs=0, name="confident_peer"):
    """Online KD from the most confident peer.

    Args:
        students: 2 or more `keras.Model`s producing logits over the same classes.
        temperature: softening temperature.
        weight: factor of the KD term.
        warmup_epochs: epochs with KD weight 0.
        name: model name.
    """
    warmup = keras_okd.knowledge.WarmUp(warmup_epochs) if warmup_epochs else None      # the part owns its schedule
    part = ConfidentPeer(weight=weight, temperature=temperature, name="confident", schedule=warmup)
    return keras_okd.OnlineDistiller(students, [part], name=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for CI)")
    args = parser.parse_args(argv)
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    if args.smoke:
        x, y, args.epochs = x[:128], y[:128], 1
    students = [keras_okd.models.get("simple_cnn", input_shape=(8, 8, 1)) for _ in range(3)]
    distiller = keras_okd.methods.get("confident_peer")(students)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = distiller.fit(x, y, validation_data=(x_val, y_val), epochs=args.epochs, batch_size=64, verbose=2)
    return history


if __name__ == "__main__":
    main()
