"""Run experiment configs of Fashion-MNIST (or MNIST) without TensorFlow: many seeds and variants in one GPU call.

    KERAS_BACKEND=jax python benchmarks/fashion_mnist_gpu.py configs/fashion_mnist/*.yaml --seeds 0 1 2 3 4 \
        --out runs/fashion_gpu --parallel 12 --time-budget 480
    KERAS_BACKEND=jax python benchmarks/fashion_mnist_gpu.py --plan benchmarks/fashion_mnist_plan.yaml \
        --data-dir data/fashion-mnist --out runs/fashion_gpu --parallel 12 --time-budget 480
    keras-okd report runs/fashion_gpu/main           # reads the run directories as if `keras-okd train` wrote them

The lent GPU machines have JAX (CUDA) and PyTorch but no TensorFlow, so `keras-okd train` (tf.data pipelines) cannot
run there. This script trains the same configs with numpy data instead. Each job (config, `--set` overrides, seed)
is a worker process that:

* reads the config with keras_okd's own loader (`load_config` with the overrides, `with_seed`), so its values are
  checked exactly as `keras-okd train --config FILE --set ...` checks them;
* builds the distiller with the runner's `build_distiller` (students from the zoo, the method preset with its
  params and per-peer views, the optimizer with coupled weight decay);
* reads the images with `keras_okd.data.mnist_family.arrays`: the stratified subset of `train_size` drawn with
  `subset_seed`, the same images `keras-okd train` trains on, and all 10,000 test images;
* feeds numpy batches through a `keras.utils.PyDataset` with the pipeline's semantics (`keras_okd.data.pipeline`):
  every sample carries its index in the subset, a new shuffle of all samples every epoch (unless `shuffle: false`),
  the last batch short, and `augment: standard` = zero-pad 2 pixels, a random 28x28 window (whole-pixel shifts of
  up to 2 each way) and, for Fashion-MNIST, a horizontal flip with probability 1/2, drawn per image (`crop`: no
  flip, `flip`: no crop, null: none). Order and draws are numpy functions of (seed, epoch) and (seed, epoch, step),
  so they differ from tf.data's draws (same distribution, other random numbers);
* trains with the runner's callbacks: the method's schedules, the config's step schedule
  (the optimizer's per-step learning-rate schedule, `runner.lr_schedule`), `keras.callbacks.CSVLogger`, and the
  distiller's default `PeerCollapse` monitor; validates on the test set every `validation_freq` epochs (batch 1000),
  as the runner does;
* writes a run directory in the runner's format at `<out>/<tag>/<experiment>/<method>/seed_<s>` (the layout of
  `keras-okd train`'s `runs/<experiment>/<method>/seed_<s>`): `config.yaml` (the resolved config, overrides
  included), `history.csv` (per-epoch training and validation logs), `progress.json`, the saved students, teacher
  peers and ensemble (`--no-models`: none), and `results.json` with the runner's keys plus `produced_by`, `device`,
  `tag`, `overrides` and `data_dir`. `keras-okd report <out>/<tag>` reads them as if the CLI had trained them.

Driver: jobs run in priority order (a `--plan` entry after another, each seed-major: seed 0 of every config, then
seed 1, ...), `--parallel` at a time on the one device (JAX workers do not preallocate GPU memory). No job starts
that the remaining `--time-budget` cannot finish, estimated from the first finished job of the same config (and tag);
jobs still running when the budget is spent are stopped and their directories moved aside (to `.stopped/`), so
every reported run is complete. A job whose run directory already holds `results.json` is not run again (a second
call continues where the first stopped). A failed job is logged (its directory moved to `.failed/`, its log kept) and
the others go on. At the end, `<out>/<tag>/summary.md` per tag: `keras_okd.experiments.report.make_report`'s table
(with its `report/` folder) where it works, else a plain table of the results (mean +- std over seeds, %).

Plan file (`--plan`): a YAML list of entries run in order, each
`{configs: [paths or globs], seeds: [..], set: [key=value, ..], tag: name}` (`set` and `seeds` optional; `seeds`
defaults to `--seeds`). `--set`, `--seeds` and `--tag` on the command line make one entry of the configs given as
arguments.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

# Several JAX processes (the driver, which builds throw-away models to check the configs, and the workers) share one
# GPU: none may take most of its memory up front, as JAX does by default.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout: use its keras_okd
    sys.path.insert(0, ROOT)

PRODUCED_BY = "benchmarks/fashion_mnist_gpu.py"
DATASETS = ("fashion_mnist", "mnist")
LOG = "train.log"


# ---------------------------------------------------------------------------------------------------------- data
def epoch_order(num_samples, seed, epoch, shuffle=True):
    """Sample order of epoch `epoch`: a permutation drawn from `(seed, epoch)`, or file order without shuffling."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def pad_crop_flip(images, rng, padding, flip):
    """Zero-pad `images` (B, H, W, C) by `padding`, crop a random H x W window per image (whole pixels), then flip
    left-right with probability 1/2 per image (when `flip`): `keras_okd.data.PadCropFlip` in numpy."""
    batch, height, width = images.shape[:3]
    dy = rng.integers(0, 2 * padding + 1, batch)
    dx = rng.integers(0, 2 * padding + 1, batch)
    flips = rng.random(batch) < 0.5 if flip else np.zeros(batch, bool)
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows = dy[:, None] + np.arange(height)[None, :]  # (B, H)
    cols = dx[:, None] + np.arange(width)[None, :]  # (B, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    return padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]


def make_batches(x, y, batch_size, seed, padding=0, flip=False, shuffle=True):
    """A `keras.utils.PyDataset` of indexed training batches `({"inputs", "index"}, labels)` with the semantics of
    `keras_okd.data.pipeline(..., training=True)`; epoch e is set by its callback `.clock` (see `epoch_order`,
    `pad_crop_flip`; step s of epoch e draws from `(seed, e, s)`)."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = epoch_order(len(y), seed, 0, shuffle)
            self.clock = EpochClock(self)

        def set_epoch(self, epoch):
            self.epoch = int(epoch)
            self.order = epoch_order(len(y), seed, self.epoch, shuffle)

        def __len__(self):
            return -(-len(y) // batch_size)

        def __getitem__(self, step):
            index = self.order[step * batch_size:(step + 1) * batch_size]
            images = x[index]
            if padding or flip:
                images = pad_crop_flip(images, np.random.default_rng([seed, self.epoch, step]), padding, flip)
            return {"inputs": images, "index": index.astype("int32")}, y[index]

    class EpochClock(keras.callbacks.Callback):
        """Tells the batches which epoch `fit` is in (before Keras asks for the epoch's first batch)."""

        def __init__(self, batches):
            super().__init__()
            self.batches = batches

        def on_epoch_begin(self, epoch, logs=None):
            self.batches.set_epoch(epoch)

    return Batches()


# ---------------------------------------------------------------------------------------------------------- worker
def worker(config_path, overrides, seed, run_dir, data_dir=None, save_models=True, tag=None, verbose=0):
    """Train one seed of a config into `run_dir` (see the module docstring); returns the results dict."""
    import keras

    import keras_okd
    from keras_okd.data import mnist_family
    from keras_okd.experiments import runner
    from keras_okd.experiments.config import dump_config, load_config, with_seed
    from keras_okd.experiments.state import atomic_json, atomic_write

    from keras_okd.experiments.ledger import git_commit

    commit = git_commit()  # the code that trains (a ledger record names it)
    resolved = with_seed(load_config(config_path, overrides), seed)
    runner.check_for_backend(resolved)
    dataset = dict(resolved["dataset"])
    name = dataset.pop("name")
    if name not in DATASETS:
        raise SystemExit(f"{config_path}: dataset {name!r}: this script reads only {', '.join(DATASETS)} (numpy "
                         "arrays); train other datasets with `keras-okd train --config`.")
    if resolved.get("strategy", "none") != "none":
        raise SystemExit(f"{config_path}: strategy {resolved['strategy']!r}: this script trains on one device "
                         "(strategy: none).")
    if os.path.exists(os.path.join(run_dir, runner.RESULTS)):
        print(f"{run_dir}: already complete ({runner.RESULTS} exists).")
        return json.load(open(os.path.join(run_dir, runner.RESULTS)))
    os.makedirs(run_dir, exist_ok=True)
    for stale in (runner.HISTORY, runner.PROGRESS):  # an earlier attempt that did not finish
        if os.path.exists(os.path.join(run_dir, stale)):
            os.remove(os.path.join(run_dir, stale))

    keras.utils.set_random_seed(seed)
    where = data_dir or dataset["data_dir"]
    (x, y), (x_test, y_test) = mnist_family.arrays(name, where, dataset["download"], dataset["train_size"],
                                                   dataset["subset_seed"])
    padding, flip = mnist_family.augmentation(name, dataset["augment"])
    train = make_batches(x, y, dataset["batch_size"], seed, padding, flip, dataset["shuffle"])
    distiller, models = runner.build_distiller(resolved, len(y), mnist_family.NUM_CLASSES, mnist_family.INPUT_SHAPE,
                                               len(train))
    atomic_write(os.path.join(run_dir, runner.CONFIG), dump_config(resolved))
    history_path = os.path.join(run_dir, runner.HISTORY)
    timer = epoch_timer()
    callbacks = keras_okd.callbacks.for_method(distiller) + [
        train.clock,
        timer,
        keras.callbacks.CSVLogger(history_path),
    ]
    start, cpu_start = time.time(), time.process_time()
    distiller.fit(train, validation_data=(x_test, y_test), validation_batch_size=1000, epochs=resolved["epochs"],
                  callbacks=callbacks, shuffle=False, verbose=verbose, validation_freq=resolved["validation_freq"])
    session_seconds, cpu_seconds = time.time() - start, time.process_time() - cpu_start
    atomic_json(os.path.join(run_dir, runner.PROGRESS), {"epochs": len(timer.seconds),
                                                        "seconds": round(sum(timer.seconds), 3)})

    if save_models:
        files = runner.save_models(distiller, models, resolved["students"], run_dir)
    else:
        files = {"models": [], "ensemble": None, "deploy": runner.deployed(distiller)}
    results = {
        **runner.run_results(resolved, seed, runner.read_history(history_path), len(y), mnist_family.NUM_CLASSES,
                             sum(timer.seconds), session_seconds, files),
        "produced_by": PRODUCED_BY,
        "device": keras_okd.backend.device_memory()[1],
        "epoch_seconds": [round(s, 2) for s in timer.seconds],
        "cpu_seconds": round(cpu_seconds, 1),
        "commit": commit,
        "tag": tag,
        "overrides": list(overrides),
        "data_dir": where,
    }
    atomic_json(os.path.join(run_dir, runner.RESULTS), results)  # written last: it marks the run complete
    return results


def rerun(path, tolerance, data_dir=None):
    """Train a ledger record's config and seed again (a worker in a temporary folder, removed) and print whether
    each accuracy is within `tolerance` points of the record's; returns 0 (reproduced) or 1."""
    import tempfile

    import keras

    from keras_okd.experiments import ledger, read_history
    from keras_okd.experiments.config import dump_config

    record = ledger.read_record(path)
    if record["backend"] != keras.backend.backend():
        raise SystemExit(f"{path} ran on KERAS_BACKEND={record['backend']}; set it (this process runs "
                         f"{keras.backend.backend()}).")
    with tempfile.TemporaryDirectory(prefix="rerun-") as work:
        config_path = os.path.join(work, "config.yaml")
        dump_config(record["config"], config_path)
        run_dir = os.path.join(work, "run")
        results = worker(config_path, [], record["seed"], run_dir, data_dir, save_models=False, tag=record["tag"])
        again = ledger.make_record(record["config"], results, read_history(os.path.join(run_dir, "history.csv")),
                                   tag=record["tag"])
    ok, lines = ledger.compare(record, again, tolerance)
    print("\n".join(lines))
    print(f"{'reproduced' if ok else 'NOT reproduced'} within {tolerance} points "
          f"({results['seconds']:.0f} s of training)")
    return 0 if ok else 1


def epoch_timer():
    """A Keras callback that records each epoch's wall seconds (training and validation) in `.seconds`."""
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self._start = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.time() - self._start)

    return Timer()


# ---------------------------------------------------------------------------------------------------------- jobs
class Job:
    """One (config, overrides, seed) of a tag, with its run directory."""

    def __init__(self, tag, config, overrides, seed, run_dir, label, work=1.0, resolved=None):
        self.tag, self.config, self.overrides, self.seed, self.run_dir = tag, config, list(overrides), seed, run_dir
        self.resolved = resolved  # the one-seed resolved config (for the ledger's "already recorded" check)
        self.label = label  # "<tag>/<config file name>": jobs with the same label take the same time
        self.work = float(work)  # epochs x training images: scales a time measured on another variant of the config
        self.process = self.started = self.log = None

    def __repr__(self):
        return f"{self.label} seed {self.seed}"


def read_plan(path):
    """The entries of a plan file: a YAML list of `{configs, seeds, set, tag}` mappings, checked."""
    import yaml

    with open(path) as f:
        entries = yaml.safe_load(f)
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f"{path}: a plan is a non-empty YAML list of {{configs, seeds, set, tag}} entries; got "
                         f"{type(entries).__name__}.")
    for i, entry in enumerate(entries):
        what = f"{path}: entry {i + 1}"
        if not isinstance(entry, dict) or not entry.get("configs") or not entry.get("tag"):
            raise SystemExit(f"{what}: needs `configs` (a list of paths or globs) and `tag` (a name), got {entry!r}.")
        unknown = set(entry) - {"configs", "seeds", "set", "tag"}
        if unknown:
            raise SystemExit(f"{what}: unknown keys {sorted(unknown)}; an entry has configs, seeds, set and tag.")
        if isinstance(entry["configs"], str):
            entry["configs"] = [entry["configs"]]
        if isinstance(entry.get("set"), str):
            entry["set"] = [entry["set"]]
        seeds = entry.get("seeds")
        if seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) and s >= 0 for s in seeds)):
            raise SystemExit(f"{what}: seeds must be a list of integers >= 0, got {seeds!r}.")
    return entries


def expand(entries, default_seeds, out, root=ROOT):
    """`[Job]` of plan entries, in priority order: entry by entry, each seed-major. Each config is read once with
    its overrides (`load_config`, checked), so a bad value stops the call before anything runs."""
    from keras_okd.experiments.config import ConfigError, default_run_dir, load_config, with_seed

    jobs, seen = [], set()
    for entry in entries:
        paths = []
        for pattern in entry["configs"]:
            found = sorted(glob.glob(pattern)) or sorted(glob.glob(os.path.join(root, pattern)))
            if not found:
                raise SystemExit(f"tag {entry['tag']}: no config file matches {pattern!r}.")
            paths += found
        overrides = list(entry.get("set") or [])
        tag = str(entry["tag"])
        resolved = {}
        for path in paths:
            try:
                resolved[path] = load_config(path, overrides)
            except ConfigError as error:
                raise SystemExit(f"tag {tag}: {error}") from None
        for seed in entry.get("seeds") or default_seeds:
            for path in paths:
                run_dir = os.path.join(default_run_dir(resolved[path], os.path.join(out, tag)), f"seed_{seed}")
                if run_dir in seen:
                    raise SystemExit(f"tag {tag}: two jobs write {run_dir} (configs with the same experiment and "
                                     "method in one tag): give them different tags.")
                seen.add(run_dir)
                config = resolved[path]
                work = config["epochs"] * (config["dataset"].get("train_size") or 60_000)
                jobs.append(Job(tag, path, overrides, seed, run_dir, f"{tag}/{os.path.basename(path)}", work,
                                with_seed(config, seed)))
    return jobs


# ---------------------------------------------------------------------------------------------------------- driver
def worker_command(job, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", job.config, "--seed", str(job.seed),
               "--run-dir", job.run_dir, "--tag", job.tag]
    for item in job.overrides:
        command += ["--set", item]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.no_models:
        command.append("--no-models")
    return command


def worker_env():
    env = dict(os.environ)  # XLA_PYTHON_CLIENT_PREALLOCATE=false included (set at the top of this file)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def move_aside(job, out, kind):
    """Move an incomplete run directory to `<out>/<tag>/.<kind>/...` (reports skip dot-folders); returns where."""
    if not os.path.isdir(job.run_dir):
        return None
    target = os.path.join(out, job.tag, f".{kind}", os.path.relpath(job.run_dir, os.path.join(out, job.tag)))
    if os.path.exists(target):
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(job.run_dir, target)
    parent = os.path.dirname(job.run_dir)  # leave no empty <experiment>/<method> folders behind
    while os.path.abspath(parent) != os.path.abspath(os.path.join(out, job.tag)) and not os.listdir(parent):
        os.rmdir(parent)
        parent = os.path.dirname(parent)
    return target


def estimate_for(job, estimates):
    """Seconds a job is expected to take: the first finished job of its config and tag; else the slowest finished
    job of its config file in another tag, scaled by the ratio of their epochs x training images (never below it);
    else None (no job of that config finished yet). `estimates`: `{label: (seconds, work)}`."""
    if job.label in estimates:
        return estimates[job.label][0]
    same_file = [seconds * max(1.0, job.work / work) for label, (seconds, work) in estimates.items()
                 if label.split("/", 1)[1] == os.path.basename(job.config)]
    return max(same_file) if same_file else None


def drive(jobs, args, say=print):
    """Run `jobs` in order, `args.parallel` at a time, within `args.time_budget` seconds; returns
    `{"done": [...], "failed": [...], "skipped": [...], "stopped": [...], "reused": [...]}` of jobs."""
    import keras

    from keras_okd.experiments import ledger

    backend = keras.backend.backend()
    records = getattr(args, "ledger", None)  # the ledger folder, or None
    out = args.out
    deadline = time.time() + args.time_budget
    outcome = {k: [] for k in ("done", "failed", "skipped", "stopped", "reused")}
    estimates, pending, running = {}, list(jobs), []
    env = worker_env()
    started_at = time.time()

    def log(message):
        say(f"[{time.time() - started_at:6.0f} s] {message}")

    while pending or running:
        for job in list(running):
            code = job.process.poll()
            if code is None:
                continue
            running.remove(job)
            job.log.close()
            seconds = time.time() - job.started
            if code == 0 and os.path.exists(os.path.join(job.run_dir, "results.json")):
                estimates.setdefault(job.label, (seconds, job.work))
                results = json.load(open(os.path.join(job.run_dir, "results.json")))
                accuracy = " ".join(f"{100 * a:.2f}" for a in results["net_accuracy"] if a is not None)
                log(f"done    {job} in {seconds:.0f} s: nets {accuracy}, ensemble "
                    f"{100 * (results['ensemble_accuracy'] or float('nan')):.2f} ({job.run_dir})")
                if records:
                    log(f"record  {ledger.record_run_dir(job.run_dir, records, job.tag)}")
                outcome["done"].append(job)
            else:
                where = move_aside(job, out, "failed")
                tail = open(job.log.name).read().strip().splitlines()[-3:] if where is None else \
                    open(os.path.join(where, LOG)).read().strip().splitlines()[-3:]
                log(f"FAILED  {job} (exit {code}) after {seconds:.0f} s; log in {where or job.log.name}: "
                    + " | ".join(tail))
                outcome["failed"].append(job)
        if time.time() >= deadline and running:
            for job in running:
                job.process.terminate()
            for job in running:
                try:
                    job.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    job.process.kill()
                    job.process.wait()
                job.log.close()
                where = move_aside(job, out, "stopped")
                log(f"stopped {job}: the time budget ran out ({where})")
                outcome["stopped"].append(job)
            running = []
        while pending and len(running) < args.parallel:
            job = pending.pop(0)
            if os.path.exists(os.path.join(job.run_dir, "results.json")):
                log(f"reused  {job}: {job.run_dir} is complete")
                if records and not ledger.has_record(records, job.tag, job.resolved, backend):
                    log(f"record  {ledger.record_run_dir(job.run_dir, records, job.tag)}")
                outcome["reused"].append(job)
                continue
            if records and ledger.has_record(records, job.tag, job.resolved, backend):
                log(f"reused  {job}: its ledger record is in {records}")
                outcome["reused"].append(job)
                continue
            need = estimate_for(job, estimates)
            left = deadline - time.time()
            if left <= 0 or (need is not None and need > left):
                log(f"skipped {job}: {left:.0f} s left, it needs ~{need or 0:.0f} s")
                outcome["skipped"].append(job)
                continue
            os.makedirs(job.run_dir, exist_ok=True)
            job.log = open(os.path.join(job.run_dir, LOG), "w")
            job.started = time.time()
            job.process = subprocess.Popen(worker_command(job, args), stdout=job.log, stderr=subprocess.STDOUT,
                                           env=env, cwd=os.getcwd())
            running.append(job)
            log(f"started {job} ({len(running)} running, {len(pending)} waiting)")
        if pending or running:
            time.sleep(0.5)
    return outcome


# ---------------------------------------------------------------------------------------------------------- summary
def plain_table(run_dirs):
    """Markdown table of complete runs (results.json) grouped by config: mean +- std over seeds (%)."""
    from statistics import mean, stdev

    groups = {}
    for path in run_dirs:
        results = json.load(open(os.path.join(path, "results.json")))
        key = (results["experiment"], results["method"], os.path.dirname(path))
        groups.setdefault(key, []).append(results)

    def cell(values):
        values = [100 * v for v in values if v is not None]
        if not values:
            return "–"
        return f"{mean(values):.2f} ± {stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    width = max(len(r[0]["net_accuracy"]) for r in groups.values())
    lines = ["| experiment | method | seeds | " + " | ".join(f"Net {i + 1}" for i in range(width)) +
             " | Ens | s/run |", "|---|---|---:|" + "---:|" * (width + 2)]
    for (experiment, method, _), runs in sorted(groups.items()):
        nets = [cell([r["net_accuracy"][i] for r in runs]) if i < len(runs[0]["net_accuracy"]) else "–"
                for i in range(width)]
        lines.append(f"| {experiment} | {method} | {len(runs)} | " + " | ".join(nets) +
                     f" | {cell([r['ensemble_accuracy'] for r in runs])} | "
                     f"{mean(r['session_seconds'] for r in runs):.0f} |")
    return "\n".join(lines)


def summarise(out, tag, say=print):
    """Write `<out>/<tag>/summary.md`: make_report's table (and its `report/` folder), else a plain table."""
    base = os.path.join(out, tag)
    complete = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(base, "*", "*", "seed_*", "results.json")))
    if not complete:
        return None
    try:
        from keras_okd.experiments.report import make_report

        report = make_report([base], os.path.join(base, "report"))
        table, source = report["table"], f"keras_okd.experiments.report.make_report ({report['markdown']})"
    except Exception as error:  # e.g. matplotlib missing on the GPU machine: the numbers still get a table
        table = plain_table(complete)
        source = f"a plain table (make_report failed: {type(error).__name__}: {' '.join(str(error).split())[:200]})"
    text = (f"# {tag}\n\n{len(complete)} complete runs under {base}; table from {source}.\n\n{table}\n")
    with open(os.path.join(base, "summary.md"), "w") as f:
        f.write(text)
    say(f"\n{text}")
    return text


# ---------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="config files (globs allowed), e.g. configs/fashion_mnist/*.yaml")
    parser.add_argument("--plan", help="YAML list of {configs, seeds, set, tag} entries, run in order")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config value in every config (repeatable; values are YAML), as "
                             "`keras-okd train --set`")
    parser.add_argument("--tag", default="main", help="name of this variant: runs go to <out>/<tag>/")
    parser.add_argument("--out", default="runs/fashion_gpu")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the IDX files (default: the config's data_dir, else Debian's folder or "
                             "Keras's cache); not written into config.yaml")
    parser.add_argument("--parallel", type=int, default=4, help="workers at a time (they share the device)")
    parser.add_argument("--time-budget", type=float, default=3600.0,
                        help="seconds for the whole call; no job starts that cannot finish in what is left")
    parser.add_argument("--no-models", action="store_true", help="do not save the trained models (.keras files)")
    parser.add_argument("--dry-run", action="store_true", help="check the configs and list the jobs; train nothing")
    parser.add_argument("--ledger", default=None, metavar="DIR",
                        help="write each finished run's record under DIR/<tag>/ (keras_okd.experiments.ledger) and "
                             "skip the jobs whose record is there already, so a campaign resumes on another machine")
    parser.add_argument("--rerun", default=None, metavar="RECORD",
                        help="train a ledger record's config and seed again (this script's records) and say whether "
                             "the accuracies reproduce within --tolerance points")
    parser.add_argument("--tolerance", type=float, default=0.0, metavar="POINTS",
                        help="with --rerun: accepted difference of each accuracy in points (default 0: identical)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.configs[0], args.overrides, args.seed, args.run_dir, args.data_dir, not args.no_models,
               args.tag)
        return None
    if args.rerun:
        return rerun(args.rerun, args.tolerance, args.data_dir)
    if args.parallel < 1 or args.time_budget <= 0:
        parser.error(f"--parallel must be >= 1 and --time-budget > 0; got {args.parallel} and {args.time_budget}.")
    if bool(args.plan) == bool(args.configs):
        parser.error("give config files or --plan FILE (one of the two).")
    entries = read_plan(args.plan) if args.plan else [
        {"configs": args.configs, "seeds": args.seeds, "set": args.overrides, "tag": args.tag}]
    import importlib.util

    if importlib.util.find_spec("yaml") is None:
        parser.error("reading the configs needs PyYAML, which is not installed here (pure Python: `pip download "
                     "pyyaml` on a machine with a network, then `pip install --target DIR` it here and add DIR to "
                     "PYTHONPATH).")
    if not args.no_models and importlib.util.find_spec("h5py") is None:
        parser.error("saving the models (.keras files) needs h5py, which is not installed here; pass --no-models "
                     "(the results, histories and configs are still written).")
    jobs = expand(entries, args.seeds, args.out)
    if args.dry_run:
        for job in jobs:
            print(f"{job}: {' '.join(job.overrides) or 'as configured'} -> {job.run_dir}")
        print(f"{len(jobs)} jobs")
        return jobs
    os.makedirs(args.out, exist_ok=True)
    log_file = open(os.path.join(args.out, "driver.log"), "a")

    def say(message):
        print(message, flush=True)
        log_file.write(message + "\n")
        log_file.flush()

    import keras

    say(f"{len(jobs)} jobs, {len({j.tag for j in jobs})} tags, backend {keras.backend.backend()}, parallel "
        f"{args.parallel}, budget {args.time_budget:.0f} s")
    outcome = drive(jobs, args, say)
    say("; ".join(f"{k} {len(v)}" for k, v in outcome.items()))
    for tag in dict.fromkeys(j.tag for j in jobs):
        summarise(args.out, tag, say)
    return outcome


if __name__ == "__main__":
    outcome = main()
    sys.exit(outcome if isinstance(outcome, int) else 0)
