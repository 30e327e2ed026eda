"""Concept density of caption columns (paper Table 1): valid and distinct nouns, VN/DN, total nouns, nouns per image.

python examples/concept_density.py --data path/or/hub-id --columns text sparse_text --json density.json
"""

from __future__ import annotations

import argparse
import json

from diffusers_pixart.atomic import write_json_atomic
from diffusers_pixart.data.concepts import dataset_concept_density


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(
            "Concept density of caption columns (paper Table 1): valid and distinct nouns, VN/DN, total nouns, "
            "nouns per image."
        )
    )
    parser.add_argument("--data", required=True, help="Hub dataset id, or a local imagefolder/webdataset/parquet path.")
    parser.add_argument("--split", default="train")
    parser.add_argument("--columns", nargs="+", default=["text"], help="Caption columns to measure.")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--min_count", type=int, default=10, help="A noun is valid when it appears more often.")
    parser.add_argument("--json", default=None, help="Also write the statistics to this JSON file.")
    args = parser.parse_args(argv)
    results = {}
    for column in args.columns:
        stats = dataset_concept_density(
            args.data, column, split=args.split, max_samples=args.max_samples, min_count=args.min_count
        )
        print(stats.table_row(column))
        results[column] = stats.as_dict()
    if args.json:
        write_json_atomic(args.json, results)
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
