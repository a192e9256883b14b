"""Load a finished run and use it: class probabilities or generated text.

    loaded = load_run("runs/support-intents-lora")
    classify(loaded, ["where is my parcel?"])   # [{"label": ..., "probabilities": {...}}]
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tunelab.config.schema import TunelabConfig
from tunelab.errors import RunFolderError, TunelabError
from tunelab.machine import choose_device, with_precision
from tunelab.models.loading import align_pad_token, load_base_model, only_needed_peft_backends, silence_known_warnings
from tunelab.models.provenance import check_fresh
from tunelab.models.quantizers import QUANTIZERS
from tunelab.rundir import VARIANTS, RunDir, open_run, refuse_remote_code, variant_info_path
from tunelab.training.methods import METHODS


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: TunelabConfig
    model: object
    tokenizer: object
    labels: list[str] | None
    format: str                  # the data format preparation detected (classification, instruction, chat, text)
    precision: dict = field(default_factory=lambda: {"setting": "fp32", "used": "fp32"})  # ``with_precision``'s record
    merged_adapter: bool = False  # the adapter was folded into the weights when loading (``load_run(merge=True)``)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


# Variants whose weights are plain floats, so a bf16 precision can cast them (quantized ones keep their kernels).
CASTABLE = (None, "adapter", "merged")


def load_run(run_dir: str | Path, variant: str | None = None, full_precision_base: bool = False,
             trust_remote_code: bool = False, precision: str = "fp32", setting: str = "eval.precision",
             merge: bool = False) -> LoadedRun:
    """The run's trained model in eval mode, in ``precision`` (auto, fp32 or bf16; ``setting`` names it in errors).

    ``variant``: None for the model as trained (base + adapter, or the full model); ``adapter``;
    ``merged`` (``RUN/merged/``); or a quantization method (``RUN/quantized/<method>/``).
    An adapter trained on a 4- or 8-bit base (qlora, lora-8bit) is loaded on that base again,
    unless ``full_precision_base``.

    ``merge``: fold a LoRA-family adapter on a full-precision base into the weights, in fp32 before any
    bf16 cast, for callers that need only the tuned model (serving, generation): the extra adapter
    matmuls go away (about 1.5x the generated tokens/s of SmolLM2 at batch 8 in bf16), and merging
    before the cast keeps more of the update than merging bf16 weights. ``base_model`` then loads
    the base afresh. A 4- or 8-bit base is never merged into.

    Run folders are shared: one whose config sets ``model.trust_remote_code: true`` would run the
    Python code shipped with its model, so it is refused unless the caller passes ``trust_remote_code``.
    """
    from transformers import AutoTokenizer

    silence_known_warnings()
    run, cfg = open_run(run_dir)
    refuse_remote_code(run.root, cfg, trust_remote_code)
    labels = run.labels() if cfg.task == "classification" else None
    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer_dir, trust_remote_code=cfg.model.trust_remote_code)
    model = load_variant(run, cfg, labels, variant, full_precision_base)
    merged = merge and mergeable(run, cfg, variant, full_precision_base) and not quantized_checkpoint(model)
    if merged:
        model = model.merge_and_unload()
    align_pad_token(model, tokenizer)
    model.eval()
    chosen = {"setting": precision, "used": "fp32", "kept": f"the {variant} variant's own weights"}
    if variant in CASTABLE:
        chosen = with_precision(choose_device("cpu"), precision, setting).precision
        in_precision(model, chosen)
    return LoadedRun(run.root, cfg, model, tokenizer, labels, run.data_report()["format"], chosen, merged)


def quantized_checkpoint(model) -> bool:
    """Whether a PEFT model's base was loaded quantized from its checkpoint (a GPTQ or bitsandbytes model
    named as ``model.name``), which an adapter cannot be folded into without loss."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "hf_quantizer", None) is not None or bool(getattr(base, "is_quantized", False))


def mergeable(run: RunDir, cfg: TunelabConfig, variant: str | None, full_precision_base: bool) -> bool:
    """Whether the model as trained is an adapter on a plain-float base, which ``merge_and_unload`` can fold."""
    return (variant is None and not run.full_model
            and (full_precision_base or METHODS[cfg.method.name].base_bits is None))


def in_precision(model, chosen: dict):
    """``model`` with its weights cast to bf16 when ``chosen`` (a ``with_precision`` record) says bf16."""
    import torch

    return model.to(torch.bfloat16) if chosen["used"] == "bf16" else model


def load_variant(run: RunDir, cfg: TunelabConfig, labels: list[str] | None, variant: str | None,
                 full_precision_base: bool = False):
    run_dir = run.root
    device = choose_device("cpu")
    folder = run.variant_dir(variant)
    if variant in (None, "adapter"):
        if run.full_model:
            if variant == "adapter":
                raise RunFolderError(f"{run_dir}: a {cfg.method.name} run saves the whole model; it has no adapter")
            return load_base_model(cfg, labels, device, location=str(folder))
        from peft import PeftModel

        bits = None if full_precision_base else METHODS[cfg.method.name].base_bits
        base = load_base_model(cfg, labels, device, bits=bits)
        with only_needed_peft_backends(base):
            return PeftModel.from_pretrained(base, folder)
    if variant == "merged":
        if not folder.exists():
            raise RunFolderError(f"{run_dir}: no merged/ folder; write it with tunelab merge {run_dir}")
        return load_base_model(cfg, labels, device, location=str(folder))
    if variant not in QUANTIZERS:
        raise TunelabError(f"--variant: unknown variant '{variant}'; valid: {', '.join(VARIANTS)}")
    if not variant_info_path(folder).exists():
        raise RunFolderError(f"{run_dir}: no quantized/{variant}/ folder; write it with "
                             f"tunelab quantize {run_dir} --method {variant}")
    check_fresh(run_dir, folder)
    return QUANTIZERS[variant].load(cfg, labels, device, folder)


@contextmanager
def base_model(loaded: LoadedRun) -> Iterator:
    """The untuned model: the adapter switched off, or the original weights for full/freeze runs and for
    runs whose adapter was merged at load (loaded again, in the run's precision)."""
    if hasattr(loaded.model, "disable_adapter"):
        with loaded.model.disable_adapter():
            yield loaded.model
        return
    yield in_precision(load_base_model(loaded.cfg, None, choose_device("cpu")), loaded.precision).eval()


def class_probabilities(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32):
    """Softmax class probabilities, shape (len(texts), num_labels), as a torch tensor."""
    import torch

    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            rows.append(torch.softmax(model(**batch).logits.float(), dim=-1))
    return torch.cat(rows) if rows else torch.empty(0)


def classify(loaded: LoadedRun, texts: list[str]) -> list[dict]:
    """Predicted label and every label's probability for each text."""
    if loaded.labels is None:
        raise TunelabError(f"{loaded.run_dir}: a {loaded.cfg.task} run generates text; it does not classify")
    probs = class_probabilities(loaded.model, loaded.tokenizer, texts, loaded.cfg.data.max_length,
                                loaded.cfg.eval.batch_size)
    results = []
    for text, row in zip(texts, probs.tolist()):
        ranked = sorted(zip(loaded.labels, row), key=lambda pair: -pair[1])
        results.append({"text": text, "label": ranked[0][0],
                        "probabilities": {name: round(p, 6) for name, p in ranked}})
    return results


def render_prompt(loaded: LoadedRun, prompt: str | list[dict]) -> str:
    """Text the model continues: a chat rendered with the run's template (generation prompt added);
    a plain string is wrapped as one user turn, except for runs trained on plain text."""
    tokenizer = loaded.tokenizer
    if isinstance(prompt, str):
        if loaded.format == "text" or not tokenizer.chat_template:
            return prompt
        prompt = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def generate(loaded: LoadedRun, prompts: list, max_new_tokens: int, batch_size: int = 8, model=None,
             temperature: float = 0.0, top_p: float = 1.0, seed: int | None = 0, token_ids: bool = False,
             min_new_tokens: int | None = None, stop: list[str] | None = None, rendered: bool = False,
             progress: str | None = None) -> list:
    """Completions for prompts (strings or chats), batched with left padding; greedy when temperature is 0.

    Returns the texts, or with ``token_ids`` the generated token ids (up to the first EOS).
    ``seed`` seeds torch before sampling (None leaves its random state as it is). A sequence ends once
    its text holds one of the ``stop`` strings (the ids then end with the token that completed it;
    the texts are not cut). ``rendered``: the prompts are already texts for the model (``render_prompt``).
    ``progress``: a label for a progress bar on stderr (one step per prompt), for long batch jobs.
    """
    import torch
    from transformers import StoppingCriteriaList

    tokenizer, model = loaded.tokenizer, model or loaded.model
    texts = list(prompts) if rendered else [render_prompt(loaded, p) for p in prompts]
    if seed is not None:
        torch.manual_seed(seed)
    # Batches of similar length carry little left padding; the outputs are put back in prompt order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    texts = [texts[i] for i in order]
    outputs = []
    bar = progress_bar(progress, len(texts))
    try:
        for start in range(0, len(texts), batch_size):
            batch = left_padded(tokenizer, texts[start:start + batch_size])
            stops = StopTexts(tokenizer, stop, batch["input_ids"].shape[1]) if stop else None
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id, min_new_tokens=min_new_tokens,
                                     stopping_criteria=StoppingCriteriaList([stops] if stops else []),
                                     **sampling_arguments(temperature, top_p))
            new = out[:, batch["input_ids"].shape[1]:]
            if token_ids:
                outputs += [_until_eos(row.tolist()[:stops.length(i) if stops else None], tokenizer.eos_token_id)
                            for i, row in enumerate(new)]
            else:
                outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            bar.update(len(new))
    finally:
        bar.close()
    in_order = [None] * len(outputs)
    for position, output in zip(order, outputs):
        in_order[position] = output
    return in_order


def stream_text(loaded: LoadedRun, prompt, max_new_tokens: int, model=None, temperature: float = 0.0,
                top_p: float = 1.0) -> Iterator[str]:
    """The completion of one prompt (a string or a chat), piece by piece as it is generated (greedy at
    temperature 0). Generation runs in a thread of its own; an error there is raised here."""
    import threading

    import torch
    from transformers import TextIteratorStreamer

    tokenizer, model = loaded.tokenizer, model or loaded.model
    batch = left_padded(tokenizer, [render_prompt(loaded, prompt)])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failed: list[BaseException] = []

    def work():
        try:
            with torch.inference_mode():
                model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, streamer=streamer,
                               **sampling_arguments(temperature, top_p))
        except BaseException as err:  # noqa: BLE001 - handed to the reader below
            failed.append(err)
            streamer.end()

    thread = threading.Thread(target=work, name="tunelab-stream", daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if failed:
        raise failed[0]


def sampling_arguments(temperature: float, top_p: float) -> dict:
    """``generate``'s sampling arguments: greedy at temperature 0."""
    return {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}


def left_padded(tokenizer, texts: list[str]):
    """``texts`` tokenized as one batch padded on the left, where generation continues every row from its end
    (the tokenizer's own padding side is left as it was)."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        return tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side


def progress_bar(label: str | None, total: int):
    """A tqdm bar on stderr labelled ``label``, or one that shows nothing when ``label`` is None."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="prompt", disable=label is None, leave=False)


class StopTexts:
    """A transformers stopping criterion: a sequence is done once its new text holds one of ``stops``.

    ``length(row)``: how many new tokens the row had when its stop text appeared (None: it never did).
    """

    def __init__(self, tokenizer, stops: list[str], prompt_length: int):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, list(stops), prompt_length
        self.found: dict[int, int] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = []
        for row, ids in enumerate(input_ids):
            if row not in self.found:
                text = self.tokenizer.decode(ids[self.prompt_length:], skip_special_tokens=True)
                if any(stop in text for stop in self.stops):
                    self.found[row] = len(ids) - self.prompt_length
            done.append(row in self.found)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def length(self, row: int) -> int | None:
        return self.found.get(row)


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids
