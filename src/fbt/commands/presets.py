"""`fbt presets`: the named presets, with their steps, data, expected time and command."""

from __future__ import annotations

import argparse
import json

NAME = "presets"


def add_parser(subparsers) -> None:
    presets = subparsers.add_parser(NAME, help="the named presets: what, steps, data, time, command")
    presets.add_argument("--json", action="store_true", help="print them as one JSON object")


def run(args: argparse.Namespace) -> None:
    from fbt.presets import PRESETS, preset_summary

    listing = {name: preset_summary(name) for name in PRESETS}
    if args.json:
        print(json.dumps(listing))
        return
    for name, entry in listing.items():
        print(f"{name}: {entry['description']}")
        print(
            f"    {entry['steps']:,} steps of {entry['tokens_per_step']:,} tokens, data {entry['data']}, "
            f"about {entry['expected_time']} on 2 CPU cores"
        )
        print(f"    {entry['command']}")
