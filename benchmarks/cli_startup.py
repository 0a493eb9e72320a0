"""How long `keras-okd --help`, `keras-okd methods` and an argument error take, whole process, start-up included.

Each command runs `--runs` times in a fresh interpreter (`python -m keras_okd.cli ...`, from the current folder) after
one warm-up run; the median wall seconds are printed per command, with the min and max. The goal of issue 20: under a
second each, with no engine imported (tests/test_cli_startup.py checks the imports).

    python benchmarks/cli_startup.py --runs 5
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["train", "--help"], ["methods"], ["train", "--epochs", "0"])


def wall_seconds(argv, runs):
    """Wall seconds of `runs` fresh `python -m keras_okd.cli ARGV` processes (after one warm-up)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "keras_okd.cli", *argv], capture_output=True, check=False)
        if i:
            times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default: 5)")
    args = parser.parse_args(argv)
    print(f"{'command':<32} {'median s':>9} {'min s':>7} {'max s':>7}")
    for command in COMMANDS:
        times = wall_seconds(command, args.runs)
        print(f"{'keras-okd ' + ' '.join(command):<32} {statistics.median(times):9.3f} {min(times):7.3f} "
              f"{max(times):7.3f}")


if __name__ == "__main__":
    main()
