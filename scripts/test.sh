#!/usr/bin/env bash
# Install keras-okd with all three Keras backends and run the test suite once per backend, each in its own process.
# The README's test command; .ci/run calls it.
set -uo pipefail
cd "$(dirname "$0")/.."
# torch first, pinned: 2.13.0 is a CPU build; an unpinned torch pulls several GB of CUDA packages.
python -m pip install --quiet "torch==2.13.0" || exit 1
python -m pip install --quiet -e ".[all,test]" || exit 1
status=0
for backend in tensorflow jax torch; do
    echo "=== KERAS_BACKEND=$backend"
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests "$@" || status=1
done
exit $status
