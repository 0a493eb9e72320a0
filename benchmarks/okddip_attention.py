"""Where OKDDip's attention goes: the auxiliary peers' mean attention matrix after a short digits run.

Trains OKDDip (multi-branch simple_cnn width 4, 4 branches = 3 auxiliary peers + the leader, tau 3, no ramp-up,
SGD 0.05 momentum 0.9, batch 64) on the bundled digits for --epochs epochs, once for each (target_gradient,
include_self) setting asked for, then prints per epoch the leader's and auxiliary peer 0's validation accuracy,
and on the validation set the auxiliary peers' summed first-level loss and the attention `alpha[a, b]` averaged
over the samples. With `include_self` the first-level loss of a peer is zero when it attends only to itself.

    KERAS_BACKEND=tensorflow python benchmarks/okddip_attention.py --epochs 6

Until the distiller adds a part's `"peer_losses"` to the loss itself (contract.md, item 4), `_Loss` adds
`weight * schedule * sum(peer_losses)` as a part loss, which is the same loss value and gradient.
"""

import argparse

import keras
import numpy as np
from keras import ops

import keras_okd
from keras_okd.knowledge import DiversePeers, okddip_targets

M = 4


class _Loss(DiversePeers):
    loss_names = ("kd",)

    def targets(self, peer_logits, context):
        per_peer = super().targets(peer_logits, context)["peer_losses"]
        return {"targets": ops.zeros((ops.shape(peer_logits)[0], 1, self.num_classes)),
                "pair_weights": ops.zeros((self.num_peers, 1)),
                "losses": {"kd": self.weight * ops.cast(self.schedule, "float32") * ops.sum(per_peer)}}


def run(target_gradient, include_self, epochs, seed):
    keras.utils.set_random_seed(seed)
    (x, y), (x_val, y_val) = keras_okd.data.digits_arrays()
    student = keras_okd.models.multi_branch("simple_cnn", M, num_classes=10, input_shape=(8, 8, 1), width=4)
    part = _Loss(temperature=3.0, target_gradient=target_gradient, include_self=include_self)
    distiller = keras_okd.OnlineDistiller(student, [part])
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = distiller.fit(x, y, validation_data=(x_val, y_val), batch_size=64, epochs=epochs, verbose=0).history
    out = student(x_val, training=False)
    logits = np.stack([keras.ops.convert_to_numpy(t) for t in out["logits"]], 1)
    features = np.stack([keras.ops.convert_to_numpy(t) for t in out["features"]], 1)
    _, attention = okddip_targets(logits, features, part.query_kernel, part.key_kernel, include_self=include_self)
    first = keras.ops.convert_to_numpy(
        keras_okd.knowledge.okddip_losses(logits, features, part.query_kernel, part.key_kernel, 3.0,
                                          include_self=include_self))[:-1]
    print(f"{keras.backend.backend()} target_gradient={target_gradient} include_self={include_self} seed {seed}")
    print(f"  val accuracy, leader:      {[round(v, 3) for v in history[f'val_branch_{M - 1}_accuracy']]}")
    print(f"  val accuracy, aux peer 0:  {[round(v, 3) for v in history['val_branch_0_accuracy']]}")
    print(f"  first-level loss of the auxiliary peers on the validation set: {first.sum():.4f}")
    print("  mean attention alpha[a, b] (rows: auxiliary peer a):")
    for row in keras.ops.convert_to_numpy(attention).mean(0):
        print("   ", " ".join(f"{v:.3f}" for v in row), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", default=["attention:self", "all:self", "attention:others"],
                        help="target_gradient:self|others pairs")
    args = parser.parse_args()
    for setting in args.settings:
        gradient, who = setting.split(":")
        run(gradient, who == "self", args.epochs, args.seed)


if __name__ == "__main__":
    main()
