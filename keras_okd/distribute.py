"""Training on several devices: strategy names, and a look at every replica's copy of a variable.

`strategy_scope(name)` is a context manager; build, compile and fit the distiller inside it:

| name                  | backend    | what runs                                                                   |
|-----------------------|------------|-----------------------------------------------------------------------------|
| `"none"`              | any        | one device                                                                  |
| `"mirrored"`          | tensorflow | `tf.distribute.MirroredStrategy` over the local devices (GPUs, or CPUs)      |
| `"multi_worker"`      | tensorflow | `tf.distribute.MultiWorkerMirroredStrategy`: one process per machine, the    |
|                       |            | cluster in `TF_CONFIG`                                                      |
| `"jax_data_parallel"` | jax        | `keras.distribution.DataParallel` over every JAX device; several processes  |
|                       |            | when the `KERAS_DISTRIBUTION_*` variables are set                           |

Several processes (both engines): start the same command on every machine with the cluster in its environment, e.g.
on two machines (or twice on one, as tests/distribute does on 127.0.0.1):

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}' \
        KERAS_BACKEND=tensorflow keras-okd train --config FILE --strategy multi_worker      # index 1 on the other
    KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234 KERAS_DISTRIBUTION_NUM_PROCESSES=2 KERAS_DISTRIBUTION_PROCESS_ID=0 \
        KERAS_BACKEND=jax keras-okd train --config FILE --strategy jax_data_parallel        # id 1 on the other

Every process feeds its share of each global batch (tf.distribute and Keras shard a `tf.data` dataset by process)
and holds the same state. In Python, pass `tf.data` datasets and do everything (build, compile, fit, evaluate) inside
`strategy_scope`: a JAX distribution applies only to calls made under it. A `MultiWorkerMirroredStrategy` must exist
before TensorFlow's first operation (`process("multi_worker")` creates it; the CLI calls it first thing), and JAX
processes must join before JAX's first computation (`initialize_processes`, called by `strategy_scope` and `process`).
`process()` tells which process is the chief; the experiment runner writes the run directory from the chief and keeps
the other processes' files in hidden `.worker<i>` sub-directories, which `keras-okd report` skips.

Limits of the engines, as found on two processes over 127.0.0.1: JAX processes need full training batches
(`drop_remainder=True`; the distiller refuses others before any step, and the experiment runner drops each epoch's
last partial batch of shuffled samples and says so); evaluation data are fed whole by every process, so test metrics
count every sample. Keras's JAX `predict` cannot fetch outputs spread over processes: predict in one process.

The torch backend has no multi-device training in Keras; only `"none"` is accepted there.

Under TensorFlow strategies the temporal accumulator's bank and visit counts are written by `keras_okd.backend.
scatter_rows`, which all-gathers the replicas' indices and rows and writes the same global rows on every replica, so
every replica holds the same bank after every step. Weights, the mean teacher (an EMA computed identically on each
replica from all-reduced weights) and batch-norm statistics (use `synchronized_bn=True` in the zoo) stay identical
too. Under JAX's DataParallel one program runs over the global batch with replicated state, so nothing needs gathering.
"""

from keras_okd import backend
from keras_okd.backend.generic import STRATEGY_ENGINES

STRATEGIES = tuple(STRATEGY_ENGINES)


def strategy_scope(name="none"):
    """A context manager that distributes what is built, compiled and fitted inside it.

    Args:
        name: one of `STRATEGIES` (see the module docstring).

    Raises:
        ValueError: an unknown name, or a strategy of another engine than the running one.

    Example:

    ```python
    with keras_okd.distribute.strategy_scope("mirrored"):
        distiller = keras_okd.methods.tsb(students, num_train_samples=50_000)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        distiller.fit(train, epochs=240)
    ```
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
    return backend.strategy(name)


def initialize_processes():
    """JAX: join the other processes named by the `KERAS_DISTRIBUTION_*` environment variables, once per process
    (`keras.distribution.initialize()`, when `KERAS_DISTRIBUTION_NUM_PROCESSES` is above 1); nothing elsewhere. JAX
    requires it before its first computation: `strategy_scope("jax_data_parallel")` and the experiment runner call it
    first.

    Example:

    ```python
    # in every process, started with KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID set
    import keras_okd
    keras_okd.distribute.initialize_processes()    # before any JAX computation; a no-op with one process
    index, count = keras_okd.distribute.process("jax_data_parallel")
    ```
    """
    backend.initialize_processes()


def process(name="none"):
    """`(index, count)` of this process among those training together under strategy `name`; index 0 is the chief.

    `"multi_worker"`: from the strategy's cluster (`TF_CONFIG`; the task of type "chief" when the cluster has one,
    else worker 0, is index 0). `"jax_data_parallel"`: `jax.process_index()`, `jax.process_count()`. Otherwise
    `(0, 1)`.

    Args:
        name: one of `STRATEGIES`.

    Returns:
        `(index, count)`, two ints.

    Example:

    >>> import keras_okd
    >>> keras_okd.distribute.process()   # a single process
    (0, 1)

    ```python
    index, count = keras_okd.distribute.process("multi_worker")   # under TF_CONFIG: this worker's place
    if index == 0:
        distiller.save("distiller.keras")                         # only the chief writes
    ```
    """
    return backend.process(name)


def num_replicas():
    """How many replicas the current strategy or distribution runs (1 without one).

    Returns:
        An int.

    Example:

    >>> import keras_okd
    >>> keras_okd.distribute.num_replicas()   # outside any strategy scope
    1

    ```python
    with keras_okd.distribute.strategy_scope("mirrored"):
        global_batch = 64 * keras_okd.distribute.num_replicas()   # 64 samples per replica
    ```
    """
    return backend.num_replicas()


def replica_values(variable):
    """Every local replica's copy of `variable` as numpy arrays (a list of one array without replicas).

    For checks that replicas agree: a TensorFlow mirrored variable gives one array per device; a JAX array
    replicated over devices gives one per device shard (a sharded, not replicated, array is returned whole).

    Args:
        variable: a `keras.Variable` (or a backend tensor).

    Returns:
        A list of numpy arrays, one per local replica.

    Example:

    >>> import keras, keras_okd
    >>> [a.tolist() for a in keras_okd.distribute.replica_values(keras.Variable([1.0, 2.0]))]
    [[1.0, 2.0]]

    ```python
    with keras_okd.distribute.strategy_scope("mirrored"):
        ...  # build, compile and fit the distiller
    copies = keras_okd.distribute.replica_values(distiller.knowledge[0].bank)   # TSB's temporal accumulator
    assert all(np.array_equal(copies[0], c) for c in copies[1:])
    ```
    """
    return backend.replica_values(variable)
