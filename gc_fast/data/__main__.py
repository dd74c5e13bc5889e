"""Command line of gc_fast.data: ``python -m gc_fast.data shard FILE OUT/`` (write_shards).

Errors are one line ``gc_fast.data: error: ...`` on stderr with exit status 2;
success prints one summary line.
"""
from __future__ import annotations

import argparse
import sys

from .shards import write_shards


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"gc_fast.data: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gc_fast.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    shard = commands.add_parser(
        "shard", help="write a data file as a sharded folder (each worker reads only its rows)")
    shard.add_argument("file", metavar="FILE", help="svmlight/libsvm text file or .npz data set")
    shard.add_argument("out", metavar="OUT/",
                       help="new or empty folder (or a previous shard run's, overwritten)")
    shard.add_argument("--test-fraction", type=float, default=0.0,
                       help="held-out fraction, split as load_dataset does (default 0)")
    shard.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    shard.add_argument("--chunks", type=int, default=None,
                       help="number of chunk files (default: about 4 MiB each)")
    shard.add_argument("--loss-sample-rows", type=int, default=50_000,
                       help="training rows kept for the training loss (default 50000)")
    return parser


def main(argv=None) -> int:
    """Run the command line; the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        shards = write_shards(args.file, args.out, test_fraction=args.test_fraction,
                              seed=args.seed, chunks=args.chunks,
                              loss_sample_rows=args.loss_sample_rows)
    except (ValueError, OSError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        parser.error(lines[0])
    print(f"sharded {args.file}: {shards.n_train + shards.n_test} rows ({shards.n_train} train, "
          f"{shards.n_test} test), {shards.n_features} features, {len(shards.chunk_bounds) - 1} "
          f"chunks -> {shards.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
