"""Run `tunelab ...` recording every batch the collator builds, one file per process.

    torchrun --nproc_per_node 2 tests/shard_probe.py OUT_DIR train CONFIG

Each process appends the input ids of each example it collates to OUT_DIR/rank-RANK.jsonl, so a
test can check which examples each rank trained on.
"""

import json
import os
import sys
from pathlib import Path

from tunelab.cli.commands import main
from tunelab.data.collate import PadCollator

out = Path(sys.argv[1])
collate = PadCollator.__call__


def recording(self, features):
    with open(out / f"rank-{os.environ.get('RANK', '0')}.jsonl", "a", encoding="utf-8") as f:
        for feature in features:
            f.write(json.dumps(list(feature["input_ids"])) + "\n")
    return collate(self, features)


PadCollator.__call__ = recording
sys.exit(main(sys.argv[2:]))
