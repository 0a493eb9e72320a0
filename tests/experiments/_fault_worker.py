"""A training process that kills itself (SIGKILL) at a named event, for the fault-injection tests.

    python _fault_worker.py CONFIG_JSON RUN_DIR SEED EVENTS_LOG [KILL_AT]

Trains `run_experiment(config, RUN_DIR, SEED)` and appends the name of every event to EVENTS_LOG as it happens
(flushed, so the log survives the kill). With KILL_AT, the process kills itself with SIGKILL at the first event of
that name, after doing the damage a kill at that moment would do:

    locked                          right after taking the run's lock (the next run finds a dead owner's record)
    batch <epoch>:<step>            after a training step
    mid-write <file>                a file written aside is cut to half its size, not yet renamed into place
    before-replace <file>           a file written aside in full, not yet renamed into place
    after-replace <file>            a file renamed into place, before whatever comes next
    csv-row <epoch>                 CSVLogger wrote the epoch's row, cut short by 5 bytes (a kill mid-row)
    epoch-end <epoch>               after every callback of the epoch

Files are named by their base name (`epoch_00002.weights.h5`, `student_0.keras`, `results.json`, ...).
"""

import json
import os
import signal
import sys


def main():
    config_json, run_dir, seed, log_path = sys.argv[1:5]
    kill_at = sys.argv[5] if len(sys.argv) > 5 else None
    import keras

    from keras_okd.experiments import config_from_dict, runner, state

    log = open(log_path, "a")

    def event(name, damage=None):
        log.write(name + "\n")
        log.flush()
        os.fsync(log.fileno())
        if name == kill_at:
            if damage is not None:
                damage()
            os.kill(os.getpid(), signal.SIGKILL)

    replace = os.replace

    def replacing(src, dst, *args, **kwargs):
        name = os.path.basename(str(dst))
        event(f"before-replace {name}")
        replace(src, dst, *args, **kwargs)
        event(f"after-replace {name}")

    os.replace = replacing
    fsync_file = state._fsync_file

    def fsyncing(path):
        name = os.path.basename(path).split("-", 2)[-1]  # .tmp-<pid>-<name>

        def cut():
            os.truncate(path, os.path.getsize(path) // 2)

        event(f"mid-write {name}", cut)
        fsync_file(path)

    state._fsync_file = fsyncing
    acquire = state.RunLock.acquire

    def acquiring(self):
        note = acquire(self)
        event("locked")
        return note

    state.RunLock.acquire = acquiring
    csv_epoch_end = keras.callbacks.CSVLogger.on_epoch_end

    def csv_row(self, epoch, logs=None):
        csv_epoch_end(self, epoch, logs)

        def cut():
            self.csv_file.flush()
            os.truncate(self.filename, os.path.getsize(self.filename) - 5)

        event(f"csv-row {epoch}", cut)

    keras.callbacks.CSVLogger.on_epoch_end = csv_row

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            event(f"batch {self.epoch}:{batch}")

        def on_epoch_end(self, epoch, logs=None):
            event(f"epoch-end {epoch}")

    config = config_from_dict(json.loads(config_json))
    results = runner.run_experiment(config, run_dir, int(seed), callbacks=[Probe()], verbose=0)
    event("done")
    print(json.dumps({"epochs": results["epochs"]}))


if __name__ == "__main__":
    main()
