"""Every script in examples/ runs on tiny settings on this backend (so none of them rots)."""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name[:-3]}", os.path.join(EXAMPLES, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.heavy
@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    if script == "several_devices.py" and keras.backend.backend() == "torch":
        pytest.skip("Keras has no multi-device training on torch; the example says so")
    argv = ["--smoke"] + (["--out", str(tmp_path)] if "--out" in open(os.path.join(EXAMPLES, script)).read() else [])
    if script == "several_devices.py":  # devices are set before the backend starts: its own process, as a user runs it
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # JAX: 2 CPU devices
        done = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *argv], capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert "2 replicas" in done.stdout
        return
    load(script).main(argv)


def test_every_example_is_tested():
    assert set(SCRIPTS) == {"dkel_export_teacher.py", "heterogeneous_applications.py", "new_method.py",
                            "quickstart_numpy.py", "several_devices.py", "tsb_tf_data.py"}
