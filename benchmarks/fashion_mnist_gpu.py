"""Fashion-MNIST benchmark of every method at a GPU recipe: all 60,000 training images, ResNet students, several seeds.

    KERAS_BACKEND=jax python benchmarks/fashion_mnist_gpu.py --data-dir /usr/share/datasets/fashion-mnist \
        --out runs/fashion_gpu --parallel 8 --time-budget 3000

It reads the original IDX files with numpy and feeds numpy batches through a `keras.utils.PyDataset` (pad-2 random
crop + horizontal flip, whole pixels, per image), so it needs neither TensorFlow nor tf.data: it runs where only
JAX or PyTorch is installed (the lent GPU machines have no TensorFlow). Each (method, seed) is one worker process;
`--parallel` of them share the device. Jobs run seed-major (seed 0 of every method first), and no job starts that
the remaining `--time-budget` cannot finish (the first job of each method measures its time), so a budget that runs
out leaves every method with the same number of seeds. Results: one JSON file per job, and `summary.md` with
test accuracy (%) per method, mean +- std over seeds, and the paired difference to independent training with a 95%
interval (t distribution over the seeds both have).

Recipe (all methods): `--model` students (ResNet-20 by default, the CIFAR ResNet on 28x28x1: stages at 28, 14, 7),
SGD momentum 0.9, learning rate `--lr` with cosine decay to zero over all steps, coupled weight decay 5e-4, batch
`--batch-size`, `--epochs` epochs. Methods with per-peer views (KDCL, PCL, DKEL) get the views in the step instead of
the pipeline's augmentation. Schedules scaled to the epochs as configs/fashion_mnist/ does (TSB warm-up 2 epochs,
ramp-ups over a quarter of training, mean teacher eta 0.01 with EMA warm-up). The feature-level methods of TSB Table
4 (`fitnet`, `at`, `crd`, `nst`, `sp`, `rkd`, `pkt`) are `dml(students, features=name)` with their defaults (the
layers CRD's benchmark code reads, found by the zoo's stage names; CRD with 16384 negatives over all training images).
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np

FEATURES = ("fitnet", "at", "crd", "nst", "sp", "rkd", "pkt")  # TSB Table 4's rows: dml(features=name)
METHODS = ("independent", "dml", "tsb", "kdcl", "one", "pcl", "dkel", "cl", "okddip", *FEATURES)
BRANCHED = ("one", "pcl", "dkel", "cl", "okddip")


# ---------------------------------------------------------------------------------------------------------- data
def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(data_dir):
    def part(name):
        for suffix in (".gz", ""):
            path = os.path.join(data_dir, name + suffix)
            if os.path.exists(path):
                return read_idx(path)
        raise FileNotFoundError(f"{name} not found in {data_dir}")

    x = part("train-images-idx3-ubyte").astype("float32")[..., None] / 255.0
    xt = part("t10k-images-idx3-ubyte").astype("float32")[..., None] / 255.0
    return (x, part("train-labels-idx1-ubyte").astype("int32")), (xt, part("t10k-labels-idx1-ubyte").astype("int32"))


def batches(x, y, batch_size, seed, augment, indexed):
    """A `keras.utils.PyDataset` of shuffled training batches: epoch e's order is a function of (seed, e)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=4, use_multiprocessing=False, max_queue_size=16)
            self.epoch = 0
            self.order = np.random.default_rng([seed, 0]).permutation(len(x))

        def __len__(self):
            return int(np.ceil(len(x) / batch_size))

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(x))

        def __getitem__(self, k):
            index = self.order[k * batch_size:(k + 1) * batch_size]
            images = x[index]
            if augment:
                rng = np.random.default_rng([seed, self.epoch, k])
                padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
                dy, dx = rng.integers(0, 5, len(index)), rng.integers(0, 5, len(index))
                images = np.stack([padded[i, a:a + 28, b:b + 28] for i, (a, b) in enumerate(zip(dy, dx))])
                flip = rng.random(len(index)) < 0.5
                images[flip] = images[flip, :, ::-1]
            inputs = {"inputs": images, "index": index.astype("int32")} if indexed else images
            return inputs, y[index]

    return Batches()


# ---------------------------------------------------------------------------------------------------------- worker
def build(method, args, n):
    import keras

    import keras_okd

    shape = (28, 28, 1)
    quarter = max(1, args.epochs // 4)
    if method in BRANCHED:
        views = method in ("pcl", "dkel")
        students = keras_okd.models.multi_branch(args.model, 3, num_classes=10, input_shape=shape,
                                                 per_branch_inputs=views)
    else:
        students = [keras_okd.models.get(args.model, num_classes=10, input_shape=shape) for _ in range(2)]
    view_layer = keras_okd.data.peer_views(28, 28, padding=2) if method in ("kdcl", "pcl", "dkel") else None
    preset = keras_okd.methods.get("dml" if method in FEATURES else method)
    params = {**{name: {"features": name, "num_train_samples": n} for name in FEATURES}, **{
        "independent": {},
        "dml": {},
        "tsb": {"num_train_samples": n, "warmup_epochs": 2},
        "kdcl": {"views": view_layer},
        "one": {"rampup_epochs": quarter},
        "pcl": {"views": view_layer, "rampup_epochs": quarter, "teacher_eta": 0.01},
        "dkel": {"views": view_layer, "rampup_epochs": quarter, "teacher_eta": 0.01},
        "cl": {},
        "okddip": {"rampup_epochs": quarter},
    }}[method]
    distiller = preset(students, **params)
    steps = args.epochs * int(np.ceil(n / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps)
    distiller.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), coupled_weight_decay=5e-4)
    return distiller


def worker(args):
    import keras

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(args.seed)
    (x, y), (xt, yt) = load(args.data_dir)
    x, y = x[:args.train_size], y[:args.train_size]
    distiller = build(args.method, args, len(x))
    views_in_step = distiller.views is not None
    train = batches(x, y, args.batch_size, args.seed, augment=not views_in_step,
                    indexed=any(p.needs_index for p in distiller.knowledge))
    start = time.time()
    history = distiller.fit(train, epochs=args.epochs, verbose=0)
    seconds = time.time() - start
    logs = distiller.evaluate(xt, yt, batch_size=1000, verbose=0, return_dict=True)
    deployed = "teacher" if distiller.deploy == "teacher" else ("branch" if distiller.multi_branch else "student")
    peers = [logs[f"{deployed}_{i}_accuracy"] for i in range(distiller.num_peers)]
    result = {
        "method": args.method, "seed": args.seed, "model": args.model, "epochs": args.epochs,
        "backend": keras.backend.backend(), "mixed_precision": args.mixed_precision, "train_size": len(x),
        "peer_accuracy": peers, "ensemble_accuracy": logs["teacher_ensemble_accuracy" if deployed == "teacher"
                                                          else "ensemble_accuracy"],
        "train_seconds": seconds, "final_train_loss": history.history["loss"][-1],
        "jit_compile": bool(getattr(distiller, "jit_compile", False)),
    }
    print(json.dumps(result), flush=True)
    return result


# ---------------------------------------------------------------------------------------------------------- driver
def summarise(results, out):
    from statistics import mean, stdev

    def avg(r):
        return 100 * mean(r["peer_accuracy"])

    by = {}
    for r in results:
        by.setdefault(r["method"], {})[r["seed"]] = r
    lines = ["| method | seeds | Net 1 | Net 2 | Net 3 | Ens | Avg | Avg - independent (95% CI) | s/run |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    base = by.get("independent", {})
    for method in [m for m in METHODS if m in by]:
        runs = [by[method][s] for s in sorted(by[method])]

        def cell(values):
            values = [100 * v for v in values]
            return f"{mean(values):.2f} ± {stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

        nets = [cell([r["peer_accuracy"][i] for r in runs]) if i < len(runs[0]["peer_accuracy"]) else "–"
                for i in range(3)]
        diff = "–"
        paired = [avg(by[method][s]) - avg(base[s]) for s in sorted(by[method]) if s in base]
        if method != "independent" and len(paired) > 1:
            from math import sqrt

            t95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365}.get(len(paired), 2.262)
            half = t95 * stdev(paired) / sqrt(len(paired))
            diff = f"{mean(paired):+.2f} [{mean(paired) - half:+.2f}, {mean(paired) + half:+.2f}]"
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(nets) + f" | {cell([r['ensemble_accuracy'] for r in runs])}"
                     f" | {cell([mean(r['peer_accuracy']) for r in runs])} | {diff} | "
                     f"{mean(r['train_seconds'] for r in runs):.0f} |")
    table = "\n".join(lines)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    return table


def driver(args):
    os.makedirs(args.out, exist_ok=True)
    deadline = time.time() + args.time_budget
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    running, results, estimate = [], [], {}
    log = open(os.path.join(args.out, "driver.log"), "a")
    while jobs or running:
        for job in list(running):
            process, method, seed, started, path = job
            if process.poll() is None:
                continue
            running.remove(job)
            estimate[method] = max(estimate.get(method, 0), time.time() - started)
            lines = [line for line in open(path).read().splitlines() if line.startswith("{")]
            if process.returncode == 0 and lines:
                results.append(json.loads(lines[-1]))
                log.write(f"done {method} seed {seed} in {time.time() - started:.0f} s\n")
            else:
                log.write(f"FAILED {method} seed {seed} (exit {process.returncode}); see {path}\n")
            log.flush()
        while jobs and len(running) < args.parallel:
            method, seed = jobs[0]
            known = estimate.get(method, max(estimate.values(), default=0))
            if known and time.time() + known > deadline:
                log.write(f"skipped {method} seed {seed}: {deadline - time.time():.0f} s left, needs ~{known:.0f}\n")
                jobs.pop(0)
                continue
            jobs.pop(0)
            path = os.path.join(args.out, f"{method}_seed{seed}.log")
            command = [sys.executable, __file__, "--worker", "--method", method, "--seed", str(seed)] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k in ("data_dir", "model", "epochs", "batch_size", "lr", "train_size")]
            if args.mixed_precision:
                command.append("--mixed-precision")
            running.append((subprocess.Popen(command, stdout=open(path, "w"), stderr=subprocess.STDOUT),
                            method, seed, time.time(), path))
        time.sleep(2)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = summarise(results, args.out)
    print(table)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="runs/fashion_gpu")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--time-budget", type=float, default=3600.0, help="seconds; no job starts that cannot finish")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
