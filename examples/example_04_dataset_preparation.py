"""Example 4: from raw files to training data: formats, chat templates, loss masking, packing, splits, leakage.

What it demonstrates
    1. Formats: three raw files as real systems export them, a ticket export (CSV: ticket_id, message,
       queue), chat logs in ShareGPT's {"conversations": [{"from", "value"}]} layout (JSONL) and
       question/context/answer rows (TSV). ``data.*_field`` settings name the columns; nothing is
       converted by hand. A fourth file is broken on purpose: tunelab reports every bad row (line and
       field) and writes nothing.
    2. Chat templates: chat and instruction rows become conversations rendered with the model's own
       chat template; one training example is printed as SmolLM2-135M-Instruct renders it.
    3. Masking: the prompt's labels are -100, so only the assistant's reply is in the loss
       (``data.mask_prompt: true``, the default); ``data.mask_prompt=false`` puts the prompt in too.
    4. Packing: ``data.packing=true`` fills each ``data.max_length`` sequence with consecutive examples;
       their position ids restart at 0 and a block-diagonal attention mask keeps them apart in training.
    5. Splits: validation and test are split off train where no file is given, seeded (``train.seed``)
       and, for classification, stratified so every label keeps its share.
    6. Leakage: a copy of the ticket export with a few test tickets pasted into train; the prepare
       report counts them (case and spacing ignored) and warns.
    7. A short LoRA fine-tune on each dataset, scored before and after on its held-out test split:
       perplexity, BLEU and ROUGE-L with SmolLM2 (chat, generation), accuracy with MiniLM (classification).

    python examples/example_04_dataset_preparation.py                    # everything (roughly 5-13 min on 2 CPU cores)
    python examples/example_04_dataset_preparation.py --quick            # a smoke run; its numbers mean nothing
    python examples/example_04_dataset_preparation.py --formats chat,generation data.max_rows=80
    python examples/example_04_dataset_preparation.py --data my_tickets.csv data.text_field=body data.label_field=team
    python examples/example_04_dataset_preparation.py --data chats.jsonl --task causal_lm --causal-model my-model-dir

What to look for
    - the formats table: one row per raw file, the format tunelab recognised, the split sizes and the
      token lengths through the model's tokenizer;
    - the rendered example: SmolLM2's <|im_start|>role ... <|im_end|> markers around each turn (rows without
      a system turn get the template's default system line);
    - masking: the masked share is the part of each conversation that is prompt (system line, template
      markers, the customer's message); with it masked the model learns to answer, not to write
      customers' messages;
    - packing: compare the mean tokens of the formats table with data.max_length: examples longer than
      half of it can rarely share a sequence (the support replies averaged 141.9 tokens through
      SmolLM2's chat template in benchmarks/results/train_throughput.json, over half of 256), and
      against tunelab's dynamic padding (each batch padded to its longest) packing can then even add
      padding; "examples each" shows how many share a sequence at 1024. Packing pays when examples are
      much shorter than max_length, or against padding to a fixed length;
    - splits: the validation share of each label matches its share in train;
    - leakage: the planted copies are caught even where their case or spacing differs;
    - before/after: SmolLM2 already answers politely before fine-tuning, so "before" is a real baseline:
      after it, replies take the shop's house style (higher BLEU and ROUGE-L, lower perplexity). For
      classification "before" is a linear probe on the frozen encoder.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from common import CHAT_MODEL, INTENTS_MODEL, QUICK_MODEL, chat_learning_rate, chat_lora, overrides

from tunelab.cli import report_problems
from tunelab.config import from_dict
from tunelab.data.builtin import builtin_data_path
from tunelab.data.collate import block_diagonal_mask
from tunelab.data.prepare import Prepared, analyse
from tunelab.data.report import summary_text
from tunelab.data.tokenize import IGNORE_INDEX, to_messages
from tunelab.errors import DataError, TunelabError
from tunelab.evaluation import evaluate
from tunelab.tables import interval, signed, text_table
from tunelab.training import train

SYSTEM = "You are a customer support agent for an online shop."
CAUSAL_ROWS = 56        # rows read from each causal raw file: 47 train, 3 validation, 6 test
FORMATS = ("classification", "chat", "generation")   # the built-in raw datasets, in the order they are built
PLANTED = 4             # test tickets pasted into the leaky train export
# the settings each causal dataset is also prepared with, to show what they change
MASK_OFF, PACK_ON, PACK_LONG = "data.mask_prompt=false", "data.packing=true", "data.packing=true data.max_length=1024"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config settings for every dataset, e.g. data.max_rows=80 train.epochs=2")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="built-in raw datasets to build, comma-separated (default: all three)")
    parser.add_argument("--data", help="your own raw file instead of the built-in ones: .jsonl/.json/.csv/.tsv/"
                                       ".parquet (name its columns with data.text_field=... and the like)")
    parser.add_argument("--test", help="held-out test file for --data (default: 10%% of --data, split off by seed)")
    parser.add_argument("--task", choices=["classification", "causal_lm"], default="classification",
                        help="task of --data (default classification)")
    parser.add_argument("--model", default=INTENTS_MODEL,
                        help=f"classification model: a hub id or a local folder (default {INTENTS_MODEL})")
    parser.add_argument("--causal-model", help=f"chat/generation model: a hub id or a local folder "
                                               f"(default {CHAT_MODEL}; {QUICK_MODEL} with --quick)")
    parser.add_argument("--epochs", type=float, help="training epochs (default: 1 causal, 4 classification)")
    parser.add_argument("--out", default="runs/example_04",
                        help="folder for the raw files and the runs (default runs/example_04)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run in seconds: {QUICK_MODEL} (random weights) for chat and generation, "
                             "few rows and steps; the numbers mean nothing")
    return parser.parse_args(argv)


# --- raw files -----------------------------------------------------------------------------------------------

def _builtin(name: str) -> list[dict]:
    return [json.loads(line) for line in builtin_data_path(name).read_text(encoding="utf-8").splitlines()]


def _write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_raw_files(raw: Path) -> dict[str, dict]:
    """The built-in data re-shaped into three raw layouts; returns each dataset's task and data settings."""
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        tickets = _builtin(f"support_intents/{split}.jsonl")
        _write_csv(raw / f"tickets_{split}.csv", ["ticket_id", "message", "queue"],
                   [[f"T{i:05d}", row["text"], row["label"]] for i, row in enumerate(tickets)])
    pairs = _builtin("support_instructions/train.jsonl")
    with open(raw / "conversations.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(pairs):
            turns = [{"from": "system", "value": SYSTEM},
                     {"from": "human", "value": f"{row['instruction']}\n\n{row['input']}".strip()},
                     {"from": "gpt", "value": row["output"]}]
            f.write(json.dumps({"id": f"chat-{i}", "conversations": turns}, ensure_ascii=False) + "\n")
    _write_csv(raw / "answers.tsv", ["question", "context", "answer"],
               [[row["instruction"], row["input"], row["output"]] for row in pairs], delimiter="\t")
    causal = {"max_length": 256, "max_rows": CAUSAL_ROWS, "validation_fraction": 0.05}  # validation: unused here
    return {
        "classification": {"task": "classification", "data": {
            "train": str(raw / "tickets_train.csv"), "test": str(raw / "tickets_test.csv"),
            "text_field": "message", "label_field": "queue", "max_length": 64}},
        "chat": {"task": "causal_lm", "data": {"train": str(raw / "conversations.jsonl"), "format": "chat", **causal}},
        "generation": {"task": "causal_lm", "data": {
            "train": str(raw / "answers.tsv"), "format": "instruction", "instruction_field": "question",
            "input_field": "context", "output_field": "answer", **causal}},
    }


def write_leaky_tickets(raw: Path, clean: dict) -> dict:
    """The ticket export with PLANTED test tickets pasted at the top of train (two re-typed in another case
    and spacing) and one train ticket twice; returns its data settings."""
    test = _builtin("support_intents/test.jsonl")[:PLANTED]
    train = _builtin("support_intents/train.jsonl")
    retyped = [row["text"] if i % 2 == 0 else "  ".join(row["text"].upper().split()) for i, row in enumerate(test)]
    planted = [[f"L{i:05d}", text, row["label"]] for i, (text, row) in enumerate(zip(retyped, test))]
    planted.append(["D00000", train[0]["text"], train[0]["label"]])  # an exact duplicate: removed, not leaked
    rows = planted + [[f"T{i:05d}", row["text"], row["label"]] for i, row in enumerate(train)]
    path = _write_csv(raw / "tickets_train_leaky.csv", ["ticket_id", "message", "queue"], rows)
    return {**clean, "data": {**clean["data"], "train": str(path)}}


def write_broken_file(raw: Path) -> Path:
    """A ticket file with the mistakes real exports contain."""
    lines = ['{"message": "Where is my parcel? It is late.", "queue": "delivery_problem"}',
             '{"message": "I want my money back", "queue": "refund_request"',         # truncated JSON
             '{"message": "Please cancel my order 1234"}',                            # no label
             '{"message": "   ", "queue": "cancel_order"}',                           # blank text
             '{"message": ["not", "a", "string"], "queue": "payment_issue"}',         # wrong type
             '{"message": "Card declined twice", "queue": "payment_issue"}']
    path = raw / "tickets_broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- configs and measurements ------------------------------------------------------------------------------

def config_for(name: str, spec: dict, args: argparse.Namespace, extra: tuple[str, ...] = ()):
    """The run config of one dataset. The causal ones take LoRA and its learning rate from
    configs/support-replies-smollm2.yaml, at batch 4 so that one epoch of 47 rows is 12 updates; the classifier
    as in configs/support-intents-lora.yaml."""
    classification = spec["task"] == "classification"
    causal_model = args.causal_model or (QUICK_MODEL if args.quick else CHAT_MODEL)
    tree = {**spec, "model": {"name": args.model if classification else causal_model},
            "method": {"name": "lora"},
            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"} if classification
            else chat_lora(),
            "train": {"epochs": args.epochs or (4 if classification else 1), "batch_size": 16 if classification else 4,
                      "learning_rate": 2e-3 if classification else chat_learning_rate(), "eval_strategy": "no",
                      "report_to": ["none"]},
            "eval": {"max_new_tokens": 48, "batch_size": 8},
            "output": {"dir": str(Path(args.out) / name), "overwrite": True}}
    return from_dict(tree, overrides(args) + list(extra), name=name, source=f"example_04 {name}")


def prepare_all(datasets: dict[str, dict], args: argparse.Namespace) -> dict[str, dict[str, Prepared]]:
    """Each dataset read, split and tokenized in memory (nothing written): as configured, and for the causal
    ones also with the prompt in the loss and with packing."""
    prepared = {}
    for name, spec in datasets.items():
        variants = ("",) if spec["task"] == "classification" else ("", MASK_OFF, PACK_ON, PACK_LONG)
        prepared[name] = {v: analyse(config_for(name, spec, args, tuple(v.split()))) for v in variants}
    return prepared


def lengths(records: list[dict]) -> list[int]:
    return [len(r["input_ids"]) for r in records]


def masked_share(records: list[dict]) -> float:
    labels = [label for r in records for label in r["labels"]]
    return sum(label == IGNORE_INDEX for label in labels) / max(len(labels), 1)


def padding_share(records: list[dict], batch_size: int, pad_to: int | None = None) -> float:
    """Share of pad tokens when consecutive records are batched and padded to ``pad_to`` tokens, or to each
    batch's longest record (dynamic padding, as tunelab's collator does) when it is None."""
    sizes = lengths(records)
    batches = [sizes[i:i + batch_size] for i in range(0, len(sizes), batch_size)]
    padded = sum((pad_to or max(b)) * len(b) for b in batches)
    return (padded - sum(sizes)) / max(padded, 1)


def _share(value: float) -> str:
    return f"{value:.1%}"


# --- the printed sections ------------------------------------------------------------------------------------

def show_raw_files(raw: Path) -> None:
    rows = []
    for path in sorted(raw.iterdir()):
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".csv", ".tsv"):
            header, *records = csv.reader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",")
            rows.append([path.name, path.suffix[1:].upper(), ", ".join(header), len(records)])
        else:
            lines = text.splitlines()
            rows.append([path.name, "JSON lines", ", ".join(json.loads(lines[0])), len(lines)])
    print(text_table(["raw file", "layout", "fields", "rows"], rows))


def show_formats(prepared: dict[str, dict[str, Prepared]]) -> None:
    rows = []
    for name, variants in prepared.items():
        p, report = variants[""], variants[""].report
        splits, train = report["splits"], lengths(p.encoded["train"])
        causal = report["task"] == "causal_lm"
        rows.append([name, Path(report["sources"]["train"]["spec"]).name, report["format"],
                     sum(s["rows_read"] for s in report["sources"].values()),
                     *(splits[s]["examples"] for s in ("train", "validation", "test")),
                     round(sum(train) / len(train)), max(train),
                     _share(masked_share(p.encoded["train"])) if causal else "-",
                     len(variants[PACK_ON].encoded["train"]) if causal else "-"])
    print(text_table(["dataset", "file", "format", "rows", "train", "validation", "test", "mean tokens",
                      "max tokens", "masked share", "packed sequences"], rows))


def show_broken(path: Path, spec: dict, args: argparse.Namespace) -> None:
    spec = {**spec, "data": {**spec["data"], "train": str(path), "test": None}}
    try:
        analyse(config_for("broken", spec, args))
    except DataError as err:
        print(f"tunelab refused {path.name} and wrote nothing ({len(err.problems)} problems):\n  "
              + "\n  ".join(err.problems))
        return
    raise AssertionError(f"{path} was accepted, but it is broken on purpose")


def show_template(name: str, p: Prepared) -> None:
    text = p.tokenizer.apply_chat_template(to_messages(p.splits["train"][0].data), tokenize=False)
    origin = {"tokenizer": "the tokenizer's own", "tunelab default": "tunelab's default (the tokenizer has none)"}
    print(f"the first {name} training example, rendered with the chat template of {p.report['tokenizer']} "
          f"({origin.get(p.report['chat_template'], p.report['chat_template'])}):")
    print("  " + text.rstrip("\n").replace("\n", "\n  "))


def show_masking(prepared: dict[str, dict[str, Prepared]], name: str) -> None:
    print(f"the same {name} example as tokens: [no loss] labels are -100, [loss] is what the model learns")
    for span in prepared[name][""].report["sample"]:
        tag = "[loss]   " if span["in_loss"] else "[no loss]"
        print(f"  {tag} " + span["text"].rstrip("\n").replace("\n", "\n" + " " * 12))
    rows = []
    for dataset, variants in prepared.items():
        for variant, label in (("", "true (default)"), (MASK_OFF, "false")):
            if variant in variants:
                records = variants[variant].encoded["train"]
                share = masked_share(records)
                total = sum(lengths(records))
                rows.append([dataset, label, total, round(total * (1 - share)), _share(share)])
    print(text_table(["dataset", "data.mask_prompt", "train tokens", "tokens in loss", "masked share"], rows))


def show_packing(name: str, variants: dict[str, Prepared], batch_size: int) -> None:
    rows = []
    for variant, packing in (("", "false (default)"), (PACK_ON, "true"), (PACK_LONG, "true")):
        records, max_length = variants[variant].encoded["train"], variants[variant].report["max_length"]
        examples = sum(pos == 0 for r in records for pos in r.get("position_ids", [0]))
        rows.append([name, packing, max_length, len(records), round(examples / len(records), 1),
                     sum(lengths(records)), _share(padding_share(records, batch_size, max_length)),
                     _share(padding_share(records, batch_size))])
    print(text_table(["dataset", "data.packing", "data.max_length", "train sequences", "examples each", "tokens",
                      "padding to max_length", f"padding to each batch's longest ({batch_size} a batch)"], rows))
    fullest = max(variants[PACK_ON].encoded["train"], key=lambda r: r["position_ids"].count(0))
    starts = [i for i, pos in enumerate(fullest["position_ids"]) if pos == 0] + [len(fullest["position_ids"])]
    pieces = [f"0..{end - start - 1}" for start, end in zip(starts, starts[1:])]
    shown = " | ".join(pieces[:6]) + (" | ..." if len(pieces) > 6 else "")
    print(f"the fullest packed sequence: {len(pieces)} examples, position ids {shown} "
          "(restarting at each example, whose first label is -100)")
    show_block_mask()


def show_block_mask() -> None:
    """The attention mask training uses for packed batches, on three toy examples of 3, 2 and 3 tokens."""
    import torch

    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])
    mask = block_diagonal_mask(torch.ones_like(positions), positions, torch.float32)[0, 0]
    print("its attention mask (x: may attend), shown for three examples of 3, 2 and 3 tokens packed together:")
    print("  position  " + " ".join(str(int(p)) for p in positions[0]))
    for i, row in enumerate(mask):
        print(f"         {int(positions[0, i])}  " + " ".join("x" if v == 0 else "." for v in row))


def show_splits(prepared: dict[str, dict[str, Prepared]]) -> None:
    rows, labelled = [], None
    for name, variants in prepared.items():
        report = variants[""].report
        split_off = report["split_from_train"]
        how = (f"{', '.join(split_off)} split off train with seed {report['seed']}" if split_off else "all given")
        how += ", stratified by label" if split_off and report["task"] == "classification" else ""
        rows.append([name, *(report["splits"][s]["rows"] for s in ("train", "validation", "test")), how])
        labelled = labelled or (report if "labels" in report else None)
    print(text_table(["dataset", "train", "validation", "test", "how"], rows))
    if labelled:
        dist = {s: labelled["splits"][s]["label_distribution"] for s in ("train", "validation", "test")}
        counts = {label: [dist[s].get(label, 0) for s in dist] for label in labelled["labels"]}
        print(text_table(["label", "train", "validation", "test", "validation share"],
                         [[label, *n, _share(n[1] / max(n[0] + n[1], 1))] for label, n in counts.items()]))


def show_leakage(reports: dict[str, dict]) -> None:
    rows = [[name, Path(r["sources"]["train"]["spec"]).name, r["sources"]["train"]["rows_read"],
             r["splits"]["train"]["duplicates_removed"], r["leakage"].get("validation_in_train", 0),
             r["leakage"].get("test_in_train", 0)] for name, r in reports.items()]
    print(text_table(["dataset", "train file", "train rows", "duplicates removed", "validation inputs in train",
                      "test inputs in train"], rows))
    for name, report in reports.items():
        for line in summary_text(report).splitlines():
            if line.startswith("warning:"):
                print(f"{name}: prepare report: {line}")


def fine_tune(name: str, cfg) -> list[list]:
    """Train, evaluate base vs tuned on the test split; the table rows of the metrics that matter here."""
    length = f"{cfg.train.max_steps} steps" if cfg.train.max_steps else f"{cfg.train.epochs:g} epoch(s)"
    print(f"{cfg.method.name} fine-tuning of {cfg.model.name} on {name} ({length}), then scoring before/after ...",
          flush=True)
    report = evaluate.run(train.run(cfg), split="test")
    keep = ("accuracy", "macro_f1") if report["task"] == "classification" else ("perplexity", "bleu", "rougeL")
    return [[name, metric, row["base"], row["tuned"], signed(row["delta"]), interval(row["ci95"])]
            for metric, row in report["metrics"].items() if metric in keep]


# --- main ----------------------------------------------------------------------------------------------------

def chosen_formats(formats: str) -> list[str]:
    """The --formats names, checked against FORMATS before anything is written."""
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown or not wanted:
        raise TunelabError(f"--formats: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(FORMATS)}")
    return wanted


def show_preparation(datasets: dict[str, dict], built: dict[str, dict] | None, args: argparse.Namespace,
                     raw: Path) -> None:
    """Sections 1-7: the raw files (``built``: the built-in ones, None for --data), then what preparation
    makes of them."""
    if built:
        leaky, broken = write_leaky_tickets(raw, built["classification"]), write_broken_file(raw)
        print(f"[1/8] raw files written to {raw}/")
        show_raw_files(raw)
    print("\n[2/8] formats: each file read, validated, split and tokenized (prepare, in memory)", flush=True)
    prepared = prepare_all(datasets, args)
    show_formats(prepared)
    if built:
        print("\na deliberately broken file:")
        show_broken(broken, built["classification"], args)
    causal = {name: v for name, v in prepared.items() if MASK_OFF in v}
    if causal:
        chats = [name for name, v in causal.items() if v[""].report["format"] in ("chat", "instruction")]
        name = "chat" if "chat" in chats else (chats or list(causal))[0]
        print("\n[3/8] chat template")
        if chats:
            show_template(name, causal[name][""])
        else:
            print("none: plain-text rows are trained as they are")
        print("\n[4/8] masking: which tokens are in the loss")
        show_masking(causal, name)
        print(f"\n[5/8] packing: several {name} examples per sequence")
        show_packing(name, causal[name], config_for(name, datasets[name], args).train.batch_size)
    print("\n[6/8] splits")
    show_splits(prepared)
    print("\n[7/8] leakage: test inputs that also occur in train")
    reports = {name: v[""].report for name, v in prepared.items() if not built or name == "classification"}
    if built:
        reports[f"tickets + {PLANTED} test rows"] = analyse(config_for("leaky", leaky, args)).report
    show_leakage(reports)


def run(args: argparse.Namespace) -> list[list]:
    """Show the preparation, then fine-tune on each dataset; returns the before/after rows."""
    if args.test and not args.data:
        raise TunelabError("--test: give it with --data (the built-in datasets bring their own test splits)")
    wanted = None if args.data else chosen_formats(args.formats)  # checked before any file is written
    raw = Path(args.out) / "raw"
    built = None if args.data else write_raw_files(raw)
    datasets = {name: built[name] for name in wanted} if built else {
        "your_data": {"task": args.task, "data": {"train": args.data, "test": args.test}}}
    show_preparation(datasets, built, args, raw)
    print("\n[8/8] fine-tuning on each dataset, then the held-out test split before and after")
    return [row for name, spec in datasets.items() for row in fine_tune(name, config_for(name, spec, args))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        print(f"--quick: a few rows and steps ({QUICK_MODEL} has random weights); the numbers below only show "
              "that everything runs, they mean nothing")
    try:
        rows = run(args)
    except TunelabError as err:
        report_problems(err)
        return 2
    print("\n== before vs after fine-tuning (held-out test split)")
    print(text_table(["dataset", "metric", "before", "after", "delta", "95% CI of delta"], rows))
    print("before: the base model as it is (classification: a linear probe on the frozen encoder); "
          f"runs in {args.out}/<dataset>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
