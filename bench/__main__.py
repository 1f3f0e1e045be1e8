"""Run every benchmark module, then print one JSON line per figure."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from bench.common import Figure, say


def modules() -> list[str]:
    """Every bench/<name>.py but the shared ones, in name order."""
    import bench

    skip = {"common", "workload"}  # shared helpers, not benchmarks
    return sorted(
        m.name
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name not in skip and not m.name.startswith("_")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Agentwatch benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument("only", nargs="*", help="benchmark modules to run (default: all)")
    args = parser.parse_args()
    figures: list[Figure] = []
    for name in args.only or modules():
        say(f"== bench {name}{' (quick)' if args.quick else ''}")
        figures += importlib.import_module(f"bench.{name}").run(args.quick)
    print()
    for fig in figures:
        print(fig.json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
