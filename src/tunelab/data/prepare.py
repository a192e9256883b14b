"""Stage 1, prepare: read -> validate -> deduplicate -> split -> tokenize -> write the run folder.

    tunelab prepare configs/support-intents-lora.yaml

Writes into ``output.dir``:
    data/{train,validation,test}.jsonl   clean examples, one JSON object per line
    data/tokenized/                      a DatasetDict (save_to_disk): input_ids, attention_mask, labels
    tokenizer/                           the tokenizer, with the chat template used for training
    labels.json                          classification: label names <-> ids
    data_report.json                     counts, token lengths, duplicates, leakage, data hash
    config.yaml                          the resolved config
Bad rows stop it before anything is written (see ``DataError``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tunelab import __version__
from tunelab.config.schema import TunelabConfig
from tunelab.data.examples import Example, LoadedData, load_examples
from tunelab.data.report import render_sample, split_report
from tunelab.data.split import count_leakage, deduplicate, split_off
from tunelab.data.tokenize import (
    EncodeStats,
    encode_causal_split,
    encode_classification,
    ensure_chat_template,
    pack,
)
from tunelab.errors import DataError
from tunelab.models.resolve import load_tokenizer
from tunelab.rundir import RunDir, staged_update, write_config, write_json

SPLIT_ORDER = ("train", "validation", "test")


@dataclass
class Prepared:
    """Everything ``prepare`` works out before it writes: the splits, their encodings and the data report."""

    splits: dict[str, list[Example]]
    encoded: dict[str, list[dict]]
    tokenizer: object
    label_names: list[str] | None
    report: dict


def run(cfg: TunelabConfig) -> Path:
    """Prepare the data a config describes; return the run folder."""
    prepared = analyse(cfg)
    run_dir = Path(cfg.output.dir)
    with staged_update(run_dir, cfg.output.overwrite) as staging:
        stage = RunDir(staging)  # laid out like the run folder it replaces
        write_prepared(stage, prepared.splits, prepared.encoded, prepared.tokenizer, prepared.label_names)
        write_json(stage.data_report_path, prepared.report)
        write_config(stage.config_path, cfg)
    return run_dir


def analyse(cfg: TunelabConfig) -> Prepared:
    """Read, validate, split and tokenize the data, and measure it (the data report); writes nothing.

    Raises:
        DataError: bad rows (one line each), or a split left with no usable example.
    """
    loaded = load_examples(cfg)
    splits, duplicates, split_from_train = build_splits(loaded, cfg)
    tokenizer = load_tokenizer(cfg.model)
    template = ensure_chat_template(tokenizer, cfg.data.chat_template) if loaded.format in ("instruction", "chat") else None
    label_names = label_order([e.data["label"] for e in splits["train"]]) if loaded.format == "classification" else None

    encoded, reports, sample = {}, {}, []
    for split in SPLIT_ORDER:
        examples = [e.data for e in splits[split]]
        records, stats = encode_split(examples, loaded.format, tokenizer, cfg, label_names, split)
        if split == "train" and records:
            sample = render_sample(records[0], tokenizer, label_names)
        if cfg.data.packing and split == "train":
            records = pack(records, cfg.data.max_length)
        encoded[split] = records
        labels = [e["label"] for e in examples] if label_names else None
        reports[split] = split_report(len(examples), records, stats, duplicates.get(split, 0), labels)

    report = {
        "task": cfg.task, "format": loaded.format, "tokenizer": cfg.model.name,
        "max_length": cfg.data.max_length, "packing": cfg.data.packing, "seed": cfg.train.seed,
        "chat_template": template, "split_from_train": split_from_train,
        "sources": {s: {"spec": src.spec, "rows_read": len(src.rows), "sha256": src.sha256}
                    for s, src in loaded.sources.items()},
        "data_hash": data_hash(loaded),
        "splits": reports, "leakage": count_leakage(splits),
        "sample": sample,
        "tunelab_version": __version__, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if label_names:
        report["labels"] = label_names
    _check_usable(encoded)
    return Prepared(splits, encoded, tokenizer, label_names, report)


def build_splits(loaded: LoadedData, cfg: TunelabConfig) -> tuple[dict[str, list[Example]], dict[str, int], list[str]]:
    """Deduplicate each given split, then split validation/test off train where not given."""
    splits, duplicates = {}, {}
    for split, examples in loaded.examples.items():
        splits[split], duplicates[split] = deduplicate(examples) if cfg.data.deduplicate else (examples, 0)
    fractions = {s: getattr(cfg.data, f"{s}_fraction") for s in ("validation", "test") if s not in splits}
    if fractions:
        splits.update(split_off(splits["train"], fractions, cfg.train.seed,
                                stratify=loaded.format == "classification"))
    return splits, duplicates, list(fractions)


def label_order(labels: list[str]) -> list[str]:
    """Label names in id order: numeric order when every label is an integer, else alphabetical."""
    names = set(labels)
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def encode_split(examples: list[dict], fmt: str, tokenizer, cfg: TunelabConfig, label_names: list[str] | None,
                 split: str) -> tuple[list[dict], EncodeStats]:
    drop_long = cfg.data.truncation == "drop"
    if fmt == "classification":
        stats = EncodeStats()
        ids = {name: i for i, name in enumerate(label_names or [])}
        records = encode_classification([e["text"] for e in examples], [ids[e["label"]] for e in examples],
                                        tokenizer, cfg.data.max_length, drop_long, stats) if examples else []
        return records, stats
    return encode_causal_split(examples, tokenizer, cfg.data.max_length, cfg.data.mask_prompt, drop_long, split)


def _check_usable(encoded: dict[str, list[dict]]) -> None:
    empty = [split for split, records in encoded.items() if not records]
    if empty:
        raise DataError(f"no usable examples left in {', '.join(empty)} after length filtering; raise "
                        "data.max_length or set data.truncation=truncate")


def data_hash(loaded: LoadedData) -> str:
    """SHA-256 over the raw sources (in split order): changes when any input row changes."""
    digest = hashlib.sha256()
    for split in SPLIT_ORDER:
        if split in loaded.sources:
            digest.update(f"{split}:{loaded.sources[split].sha256}\n".encode())
    return digest.hexdigest()


def write_prepared(run: RunDir, splits: dict[str, list[Example]], encoded: dict[str, list[dict]],
                   tokenizer, label_names: list[str] | None) -> None:
    import datasets

    run.data_dir.mkdir()
    for split in SPLIT_ORDER:
        with open(run.split_path(split), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e.data, ensure_ascii=False) + "\n" for e in splits[split])
    tokenized = datasets.DatasetDict({split: datasets.Dataset.from_list(encoded[split]) for split in SPLIT_ORDER})
    datasets.disable_progress_bars()  # three bars for a sub-second save only add noise
    try:
        tokenized.save_to_disk(str(run.tokenized_dir))
    finally:
        datasets.enable_progress_bars()
    tokenizer.save_pretrained(run.tokenizer_dir)
    if label_names:
        write_json(run.labels_path, {"id2label": dict(enumerate(label_names)),
                                            "label2id": {name: i for i, name in enumerate(label_names)}})
