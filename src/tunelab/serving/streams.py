"""Streaming pieces of `tunelab serve`: stop strings cut out of streamed text, the server-sent event
chunks of both APIs, and the transformers streamers and stopping criteria the model thread uses
(streams generated together in one batch each get their own row)."""

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
        self.add(value.reshape(-1).tolist())

    def add(self, ids: list[int]) -> None:
        """New token ids of this stream."""
        self.ids += ids
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


class RowStreamer:
    """A transformers streamer for a batch of streams: each row's new tokens go to that row's
    ``PostingStreamer`` until the row is done, then ``finish(row)`` is called once.

    ``done`` maps a finished row to the number of new tokens it ends with (``StreamedRows`` tells it,
    through ``done_at``); counting them, rather than trusting the order of the calls, keeps a row's last
    token whether generate runs its stopping criteria before handing the step's tokens over
    (transformers 5) or after.
    """

    def __init__(self, streamers: list, finish):
        self.streamers, self.finish, self.done = streamers, finish, {}
        self.sent, self.ended, self.prompt_seen = [0] * len(streamers), set(), False

    def done_at(self, row: int, tokens: int) -> None:
        """Row ``row`` ends with ``tokens`` new tokens: it ends now if it has streamed them all."""
        self.done[row] = tokens
        if self.sent[row] >= tokens:
            self.end_row(row)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate hands over the prompts first
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if row in self.ended:
                continue
            if self.sent[row] < self.done.get(row, float("inf")):
                self.streamers[row].add([token])
                self.sent[row] += 1
            if self.sent[row] >= self.done.get(row, float("inf")):
                self.end_row(row)

    def end(self) -> None:
        pass  # rows end one by one (``end_row``); whatever generate left unfinished ends in ``end_all``

    def end_row(self, row: int) -> None:
        if row not in self.ended:
            self.ended.add(row)
            self.finish(row)

    def end_all(self) -> None:
        for row in range(len(self.streamers)):
            self.end_row(row)


class StreamedRows:
    """A transformers stopping criterion for a batch of streams: row ``i`` is done once its client has
    left (``events[i]``), its own ``limits[i]`` new tokens are out, it produced the end-of-sequence
    token, or (with ``stops``, a ``StopTexts``) its text holds a stop string. ``rows`` (the batch's
    ``RowStreamer``) learns how many new tokens it ends with and ends its stream there, while longer
    rows go on."""

    def __init__(self, events: list[threading.Event], limits: list[int], prompt_length: int, eos: Optional[int],
                 rows: RowStreamer, stops=None):
        self.events, self.limits, self.prompt_length, self.eos = events, limits, prompt_length, eos
        self.rows, self.stops = rows, stops

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stopped = self.stops(input_ids, scores) if self.stops is not None else None
        new = input_ids.shape[1] - self.prompt_length
        done = self.rows.done
        for row in range(input_ids.shape[0]):
            if row not in done and (
                    self.events[row].is_set() or new >= self.limits[row] or int(input_ids[row, -1]) == self.eos
                    or (stopped is not None and bool(stopped[row]))):
                self.rows.done_at(row, new)
        return torch.tensor([row in done for row in range(input_ids.shape[0])], dtype=torch.bool)
