"""An Ollama ``Modelfile`` beside the GGUF: FROM the file, a prompt TEMPLATE, stop strings.

Ollama templates are Go templates. ``TEMPLATE_STYLES`` says how to write one for a tokenizer's
chat template, first match wins: ChatML gets Ollama's usual ``.Messages`` loop; any other chat
template is rendered with marker messages and the markers replaced by ``.System``, ``.Prompt``
and ``.Response``; a tokenizer without a chat template gets the bare prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from jinja2.exceptions import TemplateError

from tunelab import __version__

SYSTEM, USER, REPLY = "\x00SYSTEM\x00", "\x00USER\x00", "\x00REPLY\x00"  # markers no template writes itself

CHATML_TEMPLATE = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                   "{{ end }}<|im_start|>assistant\n")


@dataclass(frozen=True)
class TemplateStyle:
    matches: Callable[[object], bool]           # tokenizer -> whether this style applies
    template: Callable[[object], str]           # tokenizer -> Go template text
    stops: Callable[[object], list[str]]        # tokenizer -> stop strings besides EOS
    description: str
    system: Callable[[object], str | None] = lambda tokenizer: None  # the system prompt the template adds itself


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str | None:
    """The chat template applied to ``messages``; None without a template, or when it refuses them (no system role)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError:
        return None


CHATML_TURN = f"<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"


def _is_chatml(tokenizer) -> bool:
    return (render(tokenizer, [{"role": "user", "content": USER}], True) or "").endswith(CHATML_TURN)


def _chatml_default_system(tokenizer) -> str | None:
    """The system prompt a ChatML template writes when a chat has none (SmolLM2's does), for Ollama's SYSTEM."""
    text = render(tokenizer, [{"role": "user", "content": USER}], True) or ""
    found = re.fullmatch(r"<\|im_start\|>system\n(.*)<\|im_end\|>\n", text[: -len(CHATML_TURN)], re.S)
    return found.group(1) if found else None


def go_literal(text: str) -> str:
    """Text a Go template writes verbatim: only ``{{`` opens an action, so it is written as an action."""
    return text.replace("{{", '{{ "{{" }}')


def _reply_end(tokenizer) -> str:
    """What the template writes after an assistant reply (e.g. EOS, or <|im_end|> and a newline)."""
    text = render(tokenizer, [{"role": "user", "content": USER}, {"role": "assistant", "content": REPLY}], False)
    return text.split(REPLY, 1)[1] if text and REPLY in text else ""


def _derived_template(tokenizer) -> str:
    """A single-turn Go template from renderings with marker messages (Ollama repeats it per turn)."""
    user = {"role": "user", "content": USER}
    plain = render(tokenizer, [user], True) or USER
    with_system = render(tokenizer, [{"role": "system", "content": SYSTEM}, user], True)

    def fill(text: str) -> str:
        return go_literal(text).replace(SYSTEM, "{{ .System }}").replace(USER, "{{ .Prompt }}")

    prompt = fill(plain)
    if with_system and SYSTEM in with_system:
        prompt = f"{{{{ if .System }}}}{fill(with_system)}{{{{ else }}}}{prompt}{{{{ end }}}}"
    return prompt + "{{ .Response }}" + go_literal(_reply_end(tokenizer))


TEMPLATE_STYLES: dict[str, TemplateStyle] = {
    "chatml": TemplateStyle(_is_chatml, lambda tokenizer: CHATML_TEMPLATE,
                            lambda tokenizer: ["<|im_start|>", "<|im_end|>"],
                            "ChatML (<|im_start|>role ... <|im_end|>)", _chatml_default_system),
    "derived": TemplateStyle(lambda tokenizer: bool(getattr(tokenizer, "chat_template", None)), _derived_template,
                             lambda tokenizer: [_reply_end(tokenizer).strip()],
                             "derived from the tokenizer's chat template (one turn, repeated per turn)"),
    "plain": TemplateStyle(lambda tokenizer: True, lambda tokenizer: "{{ .Prompt }}", lambda tokenizer: [],
                           "no chat template: the prompt as given"),
}


def modelfile_text(gguf_name: str, tokenizer, model_name: str, verified: str = "") -> str:
    """The Modelfile for ``gguf_name`` (a file in the same folder)."""
    style = next(s for s in TEMPLATE_STYLES.values() if s.matches(tokenizer))
    stops = list(dict.fromkeys(s for s in [tokenizer.eos_token, *style.stops(tokenizer)] if s))
    lines = [f"# Ollama Modelfile for {gguf_name}, written by tunelab {__version__} (tunelab export).",
             f"# Load it into Ollama from this folder:  ollama create {ollama_name(model_name)} -f Modelfile",
             f"# then chat with it:  ollama run {ollama_name(model_name)}",
             f"# Prompt template: {style.description}."]
    lines += [f"# {verified}"] if verified else []
    lines += [f"FROM ./{gguf_name}", f'TEMPLATE """{style.template(tokenizer)}"""']
    system = style.system(tokenizer)
    lines += [f'SYSTEM """{system}"""'] if system else []
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    return "\n".join(lines) + "\n"


def ollama_name(name: str) -> str:
    """A model name Ollama accepts: lower case letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "model"


def write_modelfile(gguf_path: Path, tokenizer, model_name: str, verification=None) -> Path:
    """Write ``Modelfile`` beside ``gguf_path`` (replacing one there) and return its path."""
    path = gguf_path.parent / "Modelfile"
    verified = verification.summary() if verification is not None else ""
    partial = path.with_name(".Modelfile.partial")
    partial.write_text(modelfile_text(gguf_path.name, tokenizer, model_name, verified), encoding="utf-8")
    partial.replace(path)
    return path
