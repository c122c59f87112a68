"""Aligned share per direction on the MuSC sample (../shared/data/musc-sample), both modes.

    python bench/musc_alignment.py [--data DIR]

Prints one line per mode and direction: episodes, source cues, aligned cues, share, and the
episodes whose timing was corrected. Results are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import alpo

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "musc-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    args = parser.parse_args()
    for mode in ("nearest", "overlap"):
        started = time.perf_counter()
        _, report = alpo.align_report(args.data, mode=mode)
        seconds = time.perf_counter() - started
        for pair, t in sorted(report["pairs"].items()):
            print(
                f"{mode:8s} {pair}: {t['episodes']} episodes, {t['src_cues']} source cues, "
                f"{t['aligned']} aligned ({t['aligned_share']:.1%})"
            )
        synced = report["episodes_synced"]
        print(f"{mode:8s} timing corrected in {synced} episodes; {seconds:.2f} s")


if __name__ == "__main__":
    main()
