"""The accuracy table of ``snakemake validate``: one row per case x simulator.

Reads ``results/validation/<case>/<simulator>/validation.json`` files (written by
``tpsim validate``) and writes ``accuracy.csv`` and ``accuracy.md``
(:func:`tpsim.validation.write_accuracy_table`)::

    python workflow/scripts/validation_table.py --csv OUT.csv --md OUT.md RESULT/validation.json ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tpsim.validation import accuracy_rows, write_accuracy_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("reports", nargs="*", help="<case>/<simulator>/validation.json files")
    args = p.parse_args(argv)
    entries = [(Path(r).parent.parent.name, Path(r).parent.name, r) for r in args.reports]
    rows = accuracy_rows(entries)
    write_accuracy_table(rows, args.csv, args.md)
    print(f"{len(rows)} rows -> {args.csv}, {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
