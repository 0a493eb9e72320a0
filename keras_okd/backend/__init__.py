"""Where keras-okd meets the engines: everything that differs between TensorFlow, JAX and PyTorch.

The rest of keras-okd is written in `keras.ops` and calls the functions below, which dispatch to the module named for
the running engine (`keras_okd/backend/tensorflow.py`, `jax.py`, `torch.py`); `generic.py` holds what every engine
shares and what an engine module does not override. No other module of keras-okd asks which engine runs.

- `scatter_rows` / `gather_rows`: in-place row writes and row-only reads of a bank, O(batch x row) on every engine
  (`ops.scatter_update` returns a new tensor: O(N x C) per step on TensorFlow and PyTorch).
- `bank_storage_dtype`, `to_storage`, `from_storage`: a bfloat16 bank is stored as its uint16 bits on JAX.
- `lerp_variables`: the mean teacher's EMA over every weight.
- `scale_loss_for_replicas`, `strategy_scope_of`, `first_replica_batch`, `logs_for_replicas`: what Keras's TensorFlow
  trainer expects under a `tf.distribute` strategy, and two gaps it has under `MultiWorkerMirroredStrategy`.
- `strategy`, `process`, `initialize_processes`, `num_replicas`, `replica_values`, `process_inputs`,
  `jax_process_count`: several devices and processes (used by `keras_okd.distribute`).
- `device_memory`, `check_state_fits`: how much memory holds the bank.
- `synchronized_batch_norm_supported`: Keras implements synchronized batch norm on TensorFlow only.
- `torch_parameters_by_position`, `keep_state_for_errors`, `reattach_state`, `usable_after_errors`: two trainer
  traps, on torch and JAX.
- `train_step_after`, `step_value`: Keras's train step with the distiller's prologue run first (the teacher's EMA
  catch-up, the batch-norm copy), and that prologue's result inside the step: on JAX from the step's state.
"""

import keras

# The engine is fixed for the process (KERAS_BACKEND), as Keras's own backend is: import its module once.
if keras.backend.backend() == "tensorflow":
    from keras_okd.backend.tensorflow import *  # noqa: F401,F403
elif keras.backend.backend() == "jax":
    from keras_okd.backend.jax import *  # noqa: F401,F403
elif keras.backend.backend() == "torch":
    from keras_okd.backend.torch import *  # noqa: F401,F403
else:
    from keras_okd.backend.generic import *  # noqa: F401,F403
