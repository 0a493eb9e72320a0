#!/usr/bin/env bash
# One whole run of the n1000_plain regime (1,000 Fashion-MNIST images, two simple_cnn_8, 150 epochs, batch 64,
# independent training) in keras-okd (TensorFlow, the bundled fashion_mnist_1k config) and in the plain-PyTorch
# implementation, side by side, one thread each (one core each on a 2-core machine), with /usr/bin/time -v
# (TF_NUM_INTEROP_THREADS set before the script overrides its 1).
#   bash benchmarks/whole_run_vs_torch.sh OUT_DIR
# Prints both runs' accuracies and seconds; OUT_DIR gets their logs and keras-okd's run directory.
set -u
out=${1:?usage: whole_run_vs_torch.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=${TF_NUM_INTEROP_THREADS:-1}
/usr/bin/time -v env KERAS_BACKEND=tensorflow python -m keras_okd.cli train \
    --config configs/fashion_mnist_1k/independent.yaml --seed 0 --run-dir "$out/keras_okd_run" \
    > "$out/keras_okd.txt" 2>&1 &
/usr/bin/time -v python benchmarks/minimal_okd_torch.py --method independent --lr 0.01 --epochs 150 \
    --train-size 1000 --batch-size 64 --lr-warmup-epochs 5 --no-augment --width 8 --seeds 0 --eval-every 10 \
    --threads 1 --quiet > "$out/plain_torch.txt" 2>&1 &
wait
for f in keras_okd plain_torch; do
    echo "== $f"
    grep -E "^\| 0 |^seed 0|Elapsed|User time|System time" "$out/$f.txt"
done
