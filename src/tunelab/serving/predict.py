"""`tunelab predict`: labels with probabilities, or generated text, for texts or a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import DataError, TunelabError


def read_inputs(path: str, field: str) -> list[str]:
    """Texts from a .jsonl file: objects with ``field``, ``text`` or ``prompt``, or bare strings."""
    texts, problems = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path} line {number}: invalid JSON ({err.msg})")
            continue
        if isinstance(value, dict):
            value = next((value[k] for k in (field, "text", "prompt") if isinstance(value.get(k), str)), None)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{path} line {number}: expected a string or an object with a '{field}' string")
            continue
        texts.append(value)
    if problems:
        raise DataError(problems)
    return texts


def run(args) -> list[dict]:
    """Predict for ``args.texts`` / ``args.input``; print results or write ``args.output``."""
    from tunelab.inference import classify, generate, load_run

    loaded = load_run(args.run, args.variant, trust_remote_code=args.trust_remote_code, merge=True)
    if args.input and not Path(args.input).is_file():
        raise TunelabError(f"--input: file {args.input} not found")
    texts = list(args.texts) + (read_inputs(args.input, loaded.cfg.data.text_field) if args.input else [])
    if not texts:
        raise TunelabError("give texts to predict on, or --input FILE.jsonl")
    if loaded.labels is not None:
        results = classify(loaded, texts)
    else:
        if args.temperature < 0 or not 0 < args.top_p <= 1:
            raise TunelabError("--temperature must be >= 0 and --top-p in (0, 1]")
        max_new = args.max_new_tokens or loaded.cfg.eval.max_new_tokens
        outputs = generate(loaded, texts, max_new, loaded.cfg.eval.batch_size, temperature=args.temperature,
                           top_p=args.top_p, seed=args.seed)
        results = [{"prompt": t, "completion": o} for t, o in zip(texts, outputs)]
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    else:
        for r in results:
            if "label" in r:
                top = list(r["probabilities"].items())[:3]
                print(f"{r['label']}\t" + "  ".join(f"{k} {v:.3f}" for k, v in top) + f"\t{r['text']}")
            else:
                print(r["completion"])
    return results
