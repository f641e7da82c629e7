"""Example command for the demo: word frequencies of --infile (and of stdin) into --outfile."""

import argparse
import collections
import json
import re
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--infile")
    parser.add_argument("--outfile")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    text = open(args.infile, encoding="utf-8").read() if args.infile else sys.stdin.read()
    counts = collections.Counter(re.findall(r"[a-z']+", text.lower()))
    top = counts.most_common(args.top)
    if args.outfile:
        with open(args.outfile, "w", encoding="utf-8") as handle:
            json.dump({"words": sum(counts.values()), "top": top}, handle, indent=2)
    print(f"{sum(counts.values())} words; most common: {', '.join(w for w, _ in top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
