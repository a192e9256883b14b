"""What a request to `tunelab serve` may hold: the server's settings, the request models (pydantic),
the tables of OpenAI parameters that are ignored or refused, and the errors in OpenAI's shape."""

from typing import Annotated, Any, Iterable, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from tunelab.config.schema import ServeSection
from tunelab.serving.web import UNICODE_ERRORS, Timeouts, error_body, valid_unicode

DEFAULT_MAX_TOKENS = 16
MAX_STOPS = 4                 # stop strings per request, as in OpenAI's API
MIN_TEMPERATURE = 0.01        # below this (but above 0) the probabilities overflow to inf/nan
SEED_RANGE = 2 ** 64          # torch seeds are 64-bit


class ServeSettings(ServeSection):
    """Everything the server runs with: the config's ``serve`` section (each field is explained in
    ``tunelab.config.schema.ServeSection``), plus what stays out of the config."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    api_key: Optional[str] = None    # when set, every route but /health needs "Authorization: Bearer KEY"
    timeouts: Timeouts = Field(default_factory=Timeouts)  # slow request heads and bodies are cut
    check_host: bool = True          # bound to a loopback address: answer only Host: localhost/127.0.0.1/[::1]
    allowed_hosts: tuple[str, ...] = ()  # ... and these names (a reverse proxy or tunnel on this machine)

    @classmethod
    def from_config(cls, section: ServeSection, api_key: Optional[str] = None,
                    allowed_hosts: Iterable[str] = ()) -> "ServeSettings":
        """The settings of a config's ``serve`` section, with the API key and extra host names (never in the config)."""
        return cls(**section.model_dump(), api_key=api_key, allowed_hosts=tuple(allowed_hosts))


def unicode_text(value: str) -> str:
    """A string that can be sent on as UTF-8: JSON escapes can hold lone surrogates, which tokenizers reject."""
    if not valid_unicode(value):
        raise PydanticCustomError("invalid_unicode", "holds a lone surrogate, which is not valid Unicode")
    return value


def temperature_floor(value: float) -> float:
    if 0 < value < MIN_TEMPERATURE:
        raise PydanticCustomError("temperature_too_small", "use 0 for greedy decoding, or a temperature from "
                                  "{low} to 2", {"low": MIN_TEMPERATURE})
    return value


Text = Annotated[str, AfterValidator(unicode_text)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0), AfterValidator(temperature_floor)]


class Request(BaseModel):
    model_config = ConfigDict(extra="allow")  # the fields nobody declared are judged by `unsupported`
    model: Optional[Text] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: Optional[bool] = None


class Sampling(Request):
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[Temperature] = None
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    n: Optional[int] = Field(None, ge=1)
    stop: Union[Text, list[Text], None] = None
    seed: Optional[int] = Field(None, ge=-(2 ** 63), lt=SEED_RANGE)
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None


class CompletionRequest(Sampling):
    prompt: Union[Text, list[Text]]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Text
    text: Optional[Text] = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[Text, list[ContentPart]]


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


class ClassifyRequest(Request):
    model_config = ConfigDict(extra="ignore")
    input: Union[Text, list[Text]]


# Fields OpenAI clients may send that change nothing here: accepted and ignored.
IGNORED = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
           "prompt_cache_retention", "prompt_cache_options"}
# Fields of OpenAI's API that tunelab does not implement: refused unless the value asks for nothing.
REFUSED = {"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "response_format",
           "logprobs", "top_logprobs", "logit_bias", "suffix", "echo", "best_of", "presence_penalty",
           "frequency_penalty", "audio", "modalities", "prediction", "reasoning_effort", "verbosity",
           "web_search_options", "moderation"}
# Values of refused fields that ask for nothing (besides null, false, 0 and empty ones).
HARMLESS = {"tool_choice": ["none"], "function_call": ["none"], "response_format": [{"type": "text"}],
            "modalities": [["text"]], "best_of": [1]}


def asks_for_something(name: str, value: Any) -> bool:
    if value is None or value is False or value == "" or value == [] or value == {}:
        return False
    if isinstance(value, (int, float)) and value == 0:
        return False
    return value not in HARMLESS.get(name, [])


def unsupported(extra: dict) -> Optional[str]:
    """The first field of a request that this server would have to ignore silently, if any."""
    for name, value in extra.items():
        if name in IGNORED or value is None:
            continue
        if name not in REFUSED or asks_for_something(name, value):
            return name
    return None


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def validation_message(errors: list) -> tuple[Optional[str], str]:
    """(param, message) for pydantic's errors: the first one, preferring a text that is not valid Unicode."""
    first = next((e for e in errors if e["type"] in UNICODE_ERRORS), errors[0])
    where = [str(p) for p in first["loc"] if p != "body" and not _union_tag(p)]
    param = where[0] if where and first["type"] != "json_invalid" else None
    return param, f"{'.'.join(where) or 'body'}: {first['msg']}"


def _union_tag(part) -> bool:
    """pydantic names the branch of a union in an error's location (``str``, ``list[...]``): not a field."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))
