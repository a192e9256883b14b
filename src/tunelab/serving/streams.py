"""Streaming pieces of `tunelab serve`: stop strings cut out of streamed text, the server-sent event
chunks of both APIs, and the transformers streamer and stopping criterion the model thread uses."""

import threading
from typing import Optional


def first_stop(text: str, stops) -> Optional[int]:
    """Where the earliest stop string starts in ``text``, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class StopScanner:
    """Streamed text with the stop strings cut out: text that could be the start of a stop string is
    held back until the next piece shows whether it is one."""

    def __init__(self, stops):
        self.stops, self.held, self.stopped = tuple(stops), "", False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.held += piece
        cut = first_stop(self.held, self.stops)
        if cut is not None:
            self.stopped = True
            out, self.held = self.held[:cut], ""
            return out
        keep = max((k for s in self.stops for k in range(1, min(len(s), len(self.held)) + 1)
                    if self.held.endswith(s[:k])), default=0)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


class ChatEvents:
    """The chunks of a streamed chat completion."""

    object, prefix = "chat.completion.chunk", "chatcmpl-"

    @staticmethod
    def opening(index: int) -> Optional[dict]:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    @staticmethod
    def piece(index: int, text: str) -> dict:
        return {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}

    @staticmethod
    def closing(index: int, finish: str) -> dict:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}


class CompletionEvents:
    """The chunks of a streamed text completion."""

    object, prefix = "text_completion", "cmpl-"

    @staticmethod
    def opening(index: int) -> Optional[dict]:
        return None

    @staticmethod
    def piece(index: int, text: str) -> dict:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}

    @staticmethod
    def closing(index: int, finish: str) -> dict:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": finish}


class StreamFailed(Exception):
    def __init__(self, message: str, kind: str = "server_error"):
        super().__init__(message)
        self.message, self.kind = message, kind


class PostingStreamer:
    """A transformers streamer: hands each new piece of the decoded text to ``post``, holding back a
    character whose bytes are still incomplete, so that the pieces add up to the decoded whole."""

    def __init__(self, tokenizer, post):
        self.tokenizer, self.post = tokenizer, post
        self.ids, self.sent, self.prompt_seen = [], "", False

    @property
    def tokens(self) -> int:
        """New tokens so far, the end-of-sequence token not counted."""
        return sum(1 for token in self.ids if token != self.tokenizer.eos_token_id)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        self._send(final=False)

    def end(self) -> None:
        self._send(final=True)

    def _send(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return
        # Decoding more tokens can rewrite the end of the text already sent (a tokenizer that tidies
        # spaces turns "do n" into "don't"); what was sent stays sent, and the stream goes on from the
        # same length rather than stopping.
        piece, self.sent = text[len(self.sent):], text
        if piece:
            self.post(("text", piece))


class StopWhen:
    """A transformers stopping criterion: stop every sequence once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)
