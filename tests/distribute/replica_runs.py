"""Runs `_replica_worker.py` under several strategies at once and loads what each saved.

Used by `test_replica_equality.py` and by `benchmarks/replica_equality.py` (which prints the differences):

    results = run(["none", "mirrored"], "tsb,dkel", workdir)
    outputs, variables = results["mirrored"]

`outputs[(method, "loss" | "evaluate" | "predict")]` are fit's per-epoch losses, evaluate's loss and ensemble accuracy
and predict's probabilities; `variables[(method, position, path)]` is the list of every replica's copy of a variable.
`"multi_worker"` (TensorFlow, cluster in TF_CONFIG) and `"jax_processes"` (JAX DataParallel, `KERAS_DISTRIBUTION_*`)
start two processes joined over 127.0.0.1, one device each; their copies are put side by side, after checking that
both returned the same outputs (JAX processes return no predictions: Keras's JAX `predict` cannot fetch arrays that
span processes).
"""

import collections
import json
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_replica_worker.py")

#: Runs of two processes on 127.0.0.1: the worker's strategy, and each process's environment from (ports, index).
PROCESSES = {
    "multi_worker": ("multi_worker", lambda ports, index: {"TF_CONFIG": json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}})}),
    "jax_processes": ("jax_data_parallel", lambda ports, index: {
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{ports[0]}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
        "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}),
}


def run(strategies, method, workdir, backend=None, timeout=240):
    """Run the worker once per strategy, concurrently; raise `RuntimeError` with its log if one fails or hangs.

    Every process still running when this returns or raises (a worker left waiting on a collective its peer will
    never join) is killed.
    """
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    procs = {}
    try:
        for strategy in strategies:
            if strategy in PROCESSES:
                worker_strategy, environment = PROCESSES[strategy]
                ports = _free_ports(2)
                for index in range(2):
                    out = os.path.join(workdir, f"{strategy}{index}.npz")
                    procs[f"{strategy}/{index}"] = _start(backend, worker_strategy, method, out,
                                                          **environment(ports, index))
            else:
                procs[strategy] = _start(backend, strategy, method, os.path.join(workdir, f"{strategy}.npz"))
        results = {}
        for name, (proc, out) in procs.items():
            try:
                log, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"the {name} worker did not finish in {timeout} s") from None
            if proc.returncode != 0:
                raise RuntimeError(f"the {name} worker failed:\n{log.decode()[-3000:]}")
            results[name] = load(out)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for strategy in set(strategies) & set(PROCESSES):
        (outputs, first), (other_outputs, second) = results.pop(f"{strategy}/0"), results.pop(f"{strategy}/1")
        for key in outputs:
            np.testing.assert_array_equal(outputs[key], other_outputs[key], err_msg=f"the processes' {key} differ")
        results[strategy] = (outputs, {key: first[key] + second[key] for key in first})
    return results


def load(path):
    """`(outputs, variables)` from one worker's `.npz` (see the module docstring)."""
    data = np.load(path)
    variables = collections.defaultdict(list)
    outputs = {}
    for key in data.files:
        parts = key.split("|")
        if len(parts) == 2:
            outputs[tuple(parts)] = data[key]
        else:
            method, position, path, _ = parts
            variables[(method, position, path)].append(data[key])
    return outputs, dict(variables)


def _start(backend, strategy, method, out, **extra_env):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    for name in ("XLA_FLAGS", "TF_CONFIG", "KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                 "KERAS_DISTRIBUTION_PROCESS_ID"):  # only what this run sets
        env.pop(name, None)
    env.update(extra_env)
    cmd = [sys.executable, WORKER, "--strategy", strategy, "--method", method, "--out", str(out)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
