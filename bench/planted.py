"""Planted counterexamples hidden in a tiny L1 ball: how many the engine finds, how fast.

    python bench/planted.py [--shape l1|linf|linf-sqrt] [--timeout 20] [--threads 1]
        [--no-probe] [--no-guided-search]

``l1`` (the default): tests/verifier/test_guided_search.py's ``_l1_ball``,
``y = base(x) + K relu(r - |x - p|_1)`` on [-1, 1]^n with a random ReLU layer for base, no
gradient outside the ball (radius 0.005 sqrt(n)) and the unsafe set ``y >= T`` inside it
only; two seeds each at 2, 3, 5, 8, 12, 16, 20, 32 and 48 inputs.  ``linf`` and
``linf-sqrt``: tests/verifier/test_probe.py's ``_linf_ball`` (``r - max_i |x_i - p_i|``, or
``r - sqrt(max_i (x_i - p_i)^2)``, r = 0.003), two seeds each at 3, 20 and 50 inputs.
Prints one line per model (verdict, seconds, what found it) and the count found.  A
`verified` answer would be unsound and is marked WRONG.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.verifier.test_guided_search import _l1_ball  # noqa: E402
from tests.verifier.test_probe import _linf_ball  # noqa: E402
from verifier import Settings, load_model, parse_vnnlib, verify  # noqa: E402
from verifier.search.bab import BabSettings  # noqa: E402

SHAPES = {
    "l1": ((2, 3, 5, 8, 12, 16, 20, 32, 48), lambda n, seed: _l1_ball(n, seed)),
    "linf": ((3, 20, 50), lambda n, seed: _linf_ball(n, seed, square=False)),
    "linf-sqrt": ((3, 20, 50), lambda n, seed: _linf_ball(n, seed, square=True)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="l1")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--no-guided-search", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings(timeout=args.timeout)
    if args.no_probe:
        settings = dataclasses.replace(settings, probe=None)
    if args.no_guided_search:
        settings = dataclasses.replace(settings, bab_settings=BabSettings(guided=None))
    sizes, build = SHAPES[args.shape]
    found, times, wrong = 0, [], 0
    for n in sizes:
        for seed in (n, n + 1):
            data, spec, _, _ = build(n, seed)
            model = load_model(data)
            prop = parse_vnnlib(spec, model.n_inputs, model.n_outputs)
            t0 = time.perf_counter()
            result = verify(model, prop, settings)
            seconds = time.perf_counter() - t0
            found += result.verdict == "falsified"
            wrong += result.verdict == "verified"
            if result.verdict == "falsified":
                times.append(seconds)
            mark = "  WRONG" if result.verdict == "verified" else ""
            print(f"n={n:<3} seed={seed:<3} {result.verdict:<10} {seconds:7.2f} s  "
                  f"{result.message}{mark}", flush=True)
    total = 2 * len(sizes)
    median = f"{statistics.median(times):.2f} s" if times else "-"
    print(f"\nfound {found}/{total} (median {median} where found), wrong {wrong}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
