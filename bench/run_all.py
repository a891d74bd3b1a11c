"""`make bench`: run every benchmark in turn and print its figures (numbers only, no pass/fail)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("calibrate.py", "catalog_read.py", "relay.py", "sync.py", "reseller.py", "orders.py")


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    failed: list[str] = []
    for script in BENCHMARKS:
        print(f"=== bench/{script}", flush=True)
        try:
            # Each benchmark owns its throwaway stack and cleans it up, Ctrl-C included.
            code = subprocess.run(
                [sys.executable, str(HERE / script)], cwd=HERE.parent, check=False
            ).returncode
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        if code != 0:
            print(f"bench/{script} exited with code {code}", file=sys.stderr)
            failed.append(script)
        print(flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
