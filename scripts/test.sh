#!/usr/bin/env bash
# Install keras-okd with all three Keras backends and run the test suite once per backend, each in its own process.
# The README's test command; .ci/run calls it.
#
# With 2 or more cores the backends run in two lanes side by side (JAX, the slowest, in one; TensorFlow then PyTorch
# in the other), each lane's output kept in a log and printed whole when its backend ends, so the suite's wall time
# is about that of its longest lane rather than of all three. KERAS_OKD_TEST_LANES=1 runs them one after another.
set -uo pipefail
cd "$(dirname "$0")/.."
# torch first, pinned: 2.13.0 is a CPU build; an unpinned torch pulls several GB of CUDA packages.
python -m pip install --quiet "torch==2.13.0" || exit 1
python -m pip install --quiet -e ".[all,test]" || exit 1

run_backend() {  # run_backend BACKEND [pytest args...]: the suite on one backend; its exit status
    local backend=$1
    shift
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests "$@"
}

lanes=${KERAS_OKD_TEST_LANES:-$(python -c "import os; print(min(2, os.cpu_count() or 1))")}
if [ "$lanes" -lt 2 ]; then
    status=0
    for backend in tensorflow jax torch; do
        echo "=== KERAS_BACKEND=$backend"
        run_backend "$backend" "$@" || status=1
    done
    exit $status
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
lane() {  # lane BACKEND...: the backends one after another, each printed whole when it ends; fails if any failed
    local status=0 backend
    for backend in "$@"; do
        local verdict=passed
        run_backend "$backend" ${pytest_args[@]+"${pytest_args[@]}"} > "$logs/$backend.log" 2>&1 || { verdict=FAILED; status=1; }
        {  # one block per backend: the other lane waits until it is printed
            flock 9
            echo "=== KERAS_BACKEND=$backend: $verdict"
            cat "$logs/$backend.log"
        } 9> "$logs/.print"
    done
    return $status
}
pytest_args=("$@")
lane jax &
jax_lane=$!
lane tensorflow torch
status=$?
wait $jax_lane || status=1
exit $status
