"""What the routing flow routes with: the tier table, prices, and the default classifier."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from .fingerprint import utf8_len
from .messages import is_mapping, message_role, message_text
from .tiers import Tier, coerce_tier

__all__ = [
    "AUDIO_TOKENS",
    "FILE_TOKENS",
    "IMAGE_TOKENS",
    "Classifier",
    "Pricing",
    "TierModels",
    "TokenUsage",
    "classify_by_text",
    "default_classify",
    "estimate_prompt_tokens",
    "extra_prompt_bytes",
    "prompt_tokens_by_size",
    "tools_json_size",
    "routing_table",
    "token_usage",
    "usage_field",
    "usage_int",
    "usd_to_micros",
]

#: ``classify(messages, tools) -> Tier``
Classifier = Callable[[Sequence[Any], Sequence[Any] | None], Tier]

_MICROS = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class TierModels:
    """The models of one tier: the primary, then fallbacks in the order to try them."""

    primary: str
    fallback: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.primary, str) or not self.primary:
            raise ValueError(f"primary must be a non-empty model id, got {self.primary!r}")
        if isinstance(self.fallback, str) or not isinstance(self.fallback, Iterable):
            raise ValueError(f"fallback must be a list of model ids, got {self.fallback!r}")
        fallback = tuple(self.fallback)
        for i, model in enumerate(fallback):
            if not isinstance(model, str) or not model:
                raise ValueError(f"fallback[{i}] must be a non-empty model id, got {model!r}")
        object.__setattr__(self, "fallback", fallback)

    @property
    def chain(self) -> tuple[str, ...]:
        """``(primary, *fallback)``."""
        return (self.primary, *self.fallback)

    def primary_in(self, models: Collection[str]) -> str:
        """The first model of `chain` among `models`; "" when there is none."""
        return next((m for m in self.chain if m in models), "")


def routing_table(table: Mapping[str, Any]) -> dict[Tier, TierModels]:
    """``{"SIMPLE": {"primary": "...", "fallback": ["..."]}, ...}`` -> ``{Tier: TierModels}``.

    Errors name the bad key (``routing table: COMPLEX.fallback[1] ...``).
    """
    if not isinstance(table, Mapping) or not table:
        raise ValueError("routing table must be a non-empty mapping of tier -> models")
    out: dict[Tier, TierModels] = {}
    for name, spec in table.items():
        try:
            tier = coerce_tier(name)
        except ValueError:
            tier = None
        if tier is None:
            raise ValueError(
                f"routing table: unknown tier {name!r} (use SIMPLE, MEDIUM, COMPLEX, REASONING)"
            )
        if isinstance(spec, TierModels):
            out[tier] = spec
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"routing table: {tier.value} must be a table with a primary model")
        unknown = set(spec) - {"primary", "fallback"}
        if unknown:
            raise ValueError(
                f"routing table: {tier.value}.{sorted(map(str, unknown))[0]} is not a known key"
            )
        if "primary" not in spec:
            raise ValueError(f"routing table: {tier.value}.primary is missing")
        try:
            out[tier] = TierModels(spec["primary"], spec.get("fallback", ()))
        except ValueError as exc:
            raise ValueError(f"routing table: {tier.value}.{exc}") from None
    return out


def _decimal(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return d


def usd_to_micros(usd: object, *, name: str = "cost", round_up: bool = True) -> int:
    """USD (a number or a decimal string) to whole micro-USD, rounded up (or down)."""
    rounding = ROUND_CEILING if round_up else ROUND_FLOOR
    return int((_decimal(name, usd) * _MICROS).to_integral_value(rounding))


Number = int | float | str | Decimal


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A call's tokens by what they are priced at."""

    input: int = 0  # input that was not read from (nor written to) a prompt cache
    output: int = 0  # output, reasoning included
    cache_read: int = 0  # input read from the prompt cache
    cache_write: int = 0  # input written to the prompt cache (5-minute TTL)
    cache_write_1h: int = 0  # input written to the prompt cache with a 1-hour TTL


@dataclass(frozen=True, slots=True, init=False)
class Pricing:
    """Prices of one model in USD per million tokens (that is, micro-USD per token).

    Cache reads cost `cache_read_per_mtok` and cache writes `cache_write_per_mtok` (and
    `cache_write_1h_per_mtok` for a 1-hour TTL); a price not given is the input price
    (the 1-hour write: the 5-minute one). Floats are read through their decimal repr, so
    ``0.15`` is exactly 0.15. Costs are computed exactly and rounded up once, to whole
    micro-USD.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal
    cache_write_per_mtok: Decimal
    cache_write_1h_per_mtok: Decimal
    # the five prices as integers over one common denominator: a cost is a few
    # multiplications and one division, exactly
    _coefficients: tuple[int, int, int, int, int] = field(repr=False, compare=False)
    _denominator: int = field(repr=False, compare=False)

    def __init__(
        self,
        input_per_mtok: Number,
        output_per_mtok: Number,
        cache_read_per_mtok: Number | None = None,
        cache_write_per_mtok: Number | None = None,
        cache_write_1h_per_mtok: Number | None = None,
    ) -> None:
        price_in = _decimal("input_per_mtok", input_per_mtok)
        price_out = _decimal("output_per_mtok", output_per_mtok)
        read = (
            price_in
            if cache_read_per_mtok is None
            else _decimal("cache_read_per_mtok", cache_read_per_mtok)
        )
        write = (
            price_in
            if cache_write_per_mtok is None
            else _decimal("cache_write_per_mtok", cache_write_per_mtok)
        )
        write_1h = (
            write
            if cache_write_1h_per_mtok is None
            else _decimal("cache_write_1h_per_mtok", cache_write_1h_per_mtok)
        )
        prices = (price_in, price_out, read, write, write_1h)
        for name, value in zip(
            ("input", "output", "cache_read", "cache_write", "cache_write_1h"), prices, strict=True
        ):
            object.__setattr__(self, f"{name}_per_mtok", value)
        ratios = [price.as_integer_ratio() for price in prices]
        denominator = math.lcm(*(d for _, d in ratios))
        coefficients = tuple(n * (denominator // d) for n, d in ratios)
        object.__setattr__(self, "_coefficients", coefficients)
        object.__setattr__(self, "_denominator", denominator)

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact cost of a call at the input and output prices, rounded up to whole
        micro-USD."""
        k = self._coefficients
        return -(-(k[0] * prompt_tokens + k[1] * completion_tokens) // self._denominator)

    def usage_micros(self, usage: TokenUsage) -> int:
        """Exact cost of a call's `usage`, each kind of token at its price, rounded up."""
        k = self._coefficients
        total = (
            k[0] * usage.input
            + k[1] * usage.output
            + k[2] * usage.cache_read
            + k[3] * usage.cache_write
            + k[4] * usage.cache_write_1h
        )
        return -(-total // self._denominator)

    def cache_savings_micros(self, cache_read_tokens: int) -> int:
        """What reading these tokens from the cache saved over the input price (rounded
        down: a saving is never overstated)."""
        k = self._coefficients
        return (k[0] - k[2]) * cache_read_tokens // self._denominator


def usage_field(usage: Any, name: str) -> Any:
    """A field of a usage block: a mapping's key or an object's attribute (None if absent)."""
    return usage.get(name) if is_mapping(usage) else getattr(usage, name, None)


def usage_int(usage: Any, name: str) -> int:
    """A token count of a usage block: 0 when absent; ValueError when it is not an int >= 0."""
    value = usage_field(usage, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"usage.{name} must be an int >= 0, got {value!r}")
    return value


def token_usage(usage: Any) -> TokenUsage:
    """A usage block by price class, from any of the wire formats:

    - Chat Completions: ``prompt_tokens`` (cached included), ``completion_tokens``,
      ``prompt_tokens_details.cached_tokens`` (and ``cache_write_tokens``, where reported);
    - Anthropic Messages: ``input_tokens`` (uncached), ``output_tokens``,
      ``cache_read_input_tokens``, ``cache_creation_input_tokens`` (split by
      ``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``);
    - Responses: ``input_tokens`` (cached included), ``output_tokens``,
      ``input_tokens_details.cached_tokens`` (and ``cache_write_tokens``).

    A mapping or an object with those attributes; a count that is not an int >= 0 raises
    `ValueError`.
    """
    if (
        usage_field(usage, "prompt_tokens") is not None
        or usage_field(usage, "completion_tokens") is not None
    ):
        return _with_cache_details(
            usage_int(usage, "prompt_tokens"),
            usage_int(usage, "completion_tokens"),
            usage_field(usage, "prompt_tokens_details"),
        )
    inputs, output = usage_int(usage, "input_tokens"), usage_int(usage, "output_tokens")
    read = usage_int(usage, "cache_read_input_tokens")
    created = usage_int(usage, "cache_creation_input_tokens")
    if read or created or usage_field(usage, "cache_creation") is not None:
        split = usage_field(usage, "cache_creation")
        hour = usage_int(split, "ephemeral_1h_input_tokens")
        minutes = usage_int(split, "ephemeral_5m_input_tokens") if split is not None else created
        if split is not None and minutes + hour != created and created:
            minutes = max(created - hour, 0)
        return TokenUsage(inputs, output, read, minutes, hour)
    return _with_cache_details(inputs, output, usage_field(usage, "input_tokens_details"))


def _with_cache_details(inputs: int, output: int, details: Any) -> TokenUsage:
    """OpenAI's shape: `inputs` holds the cache's tokens; ``cached_tokens`` were read from
    it and ``cache_write_tokens`` (where reported) written to it, each at most what is
    left of the input."""
    cached = min(usage_int(details, "cached_tokens"), inputs)
    written = min(usage_int(details, "cache_write_tokens"), inputs - cached)
    return TokenUsage(inputs - cached - written, output, cached, written)


def with_generated_output(usage: Any, output_bytes: int) -> Any:
    """The usage of a stream that was cut, its output count at least ceil(`output_bytes`
    / 3) tokens: what was generated, where the count it carries may be a placeholder (a
    Messages stream says ``output_tokens: 1`` at its start, the real count only at its
    end). A usage without an output count (or not a dict) is returned as it is."""
    if not isinstance(usage, dict):
        return usage
    generated = -(-output_bytes // 3)
    for name in ("output_tokens", "completion_tokens"):
        count = usage.get(name)
        if isinstance(count, int) and not isinstance(count, bool) and count < generated:
            return {**usage, name: generated}
    return usage


#: Tokens the budget's worst case counts for each media part of a prompt, whatever its
#: size: above what the large providers charge for one image at full detail, a few
#: minutes of audio, or a short document.
IMAGE_TOKENS = 2_000
AUDIO_TOKENS = 10_000
FILE_TOKENS = 25_000
_MEDIA_TOKENS = {
    "image_url": IMAGE_TOKENS,
    "image": IMAGE_TOKENS,
    "input_image": IMAGE_TOKENS,
    "input_audio": AUDIO_TOKENS,
    "audio": AUDIO_TOKENS,
    "file": FILE_TOKENS,
    "input_file": FILE_TOKENS,
    "document": FILE_TOKENS,
}
_TEXT_PARTS = ("text", "input_text")
_MEDIA_BYTES = 3  # a token is counted as 3 bytes everywhere here


def estimate_prompt_tokens(messages: Sequence[Any], tools: Sequence[Any] | None) -> int:
    """The prompt's size in tokens as the budget counts it: ceil(bytes / 3) of every
    message's text, tool calls (names and arguments), tool results, other parts' JSON and
    the tools' JSON, plus a fixed count per image, audio or file part."""
    size = sum(utf8_len(message_text(m)) + extra_prompt_bytes(m) for m in messages)
    return prompt_tokens_by_size(size, tools)


def extra_prompt_bytes(message: Any) -> int:
    """What a message adds to the prompt beyond its text (`message_text`): the JSON of its
    tool calls and of content parts that are not text, and media parts at their fixed
    token count (in bytes, at 3 a token)."""
    if not is_mapping(message):
        return 0
    extra = 0
    content = message.get("content")
    if type(content) is list:
        for part in content:
            kind = part.get("type", "text") if is_mapping(part) else "text"
            if kind in _TEXT_PARTS:
                continue
            tokens = _MEDIA_TOKENS.get(kind) if isinstance(kind, str) else None
            extra += tokens * _MEDIA_BYTES if tokens else _json_size(part)
    calls = message.get("tool_calls")
    if type(calls) is list:
        for call in calls:
            extra += _call_size(call)
    elif calls:
        extra += _json_size(calls)
    legacy = message.get("function_call")
    if legacy:
        extra += _call_size({"function": legacy})
    return extra


_CALL_OVERHEAD = 64  # bytes of the JSON around one tool call's name and arguments


def _call_size(call: Any) -> int:
    """A tool call's size: its name and arguments, and the JSON around them."""
    function = call.get("function") if is_mapping(call) else None
    if not is_mapping(function):
        return _json_size(call)
    name, arguments = function.get("name"), function.get("arguments")
    if not isinstance(name, str) or not isinstance(arguments, str):
        return _json_size(call)
    return _CALL_OVERHEAD + utf8_len(name) + utf8_len(arguments)


def _json_size(value: Any) -> int:
    try:
        return utf8_len(json.dumps(value))
    except (TypeError, ValueError):  # not JSON data: count its text form
        return utf8_len(str(value))


def prompt_tokens_by_size(text_bytes: int, tools: Sequence[Any] | None) -> int:
    """`estimate_prompt_tokens` from the messages' total UTF-8 size."""
    if tools:
        text_bytes += tools_json_size(tools)
    return math.ceil(text_bytes / 3)


_last_tools: tuple[Any, int] = ((), 0)


def tools_json_size(tools: Sequence[Any]) -> int:
    """UTF-8 size of ``json.dumps(tools)``. Agents send the same tools on every turn, so
    the last answer is kept, against a copy of the tools it measured (comparing two equal
    lists costs a fraction of encoding one; a caller mutating its list can't stale it)."""
    global _last_tools
    last, size = _last_tools
    if tools != last:
        encoded = json.dumps(tools)
        size = utf8_len(encoded)
        _last_tools = (json.loads(encoded), size)
    return size


# -- the default classifier -----------------------------------------------------------------

_REASONING_CUES = re.compile(
    r"\b(prove|proof|step[- ]by[- ]step|derive|derivation|theorem|lemma|rigorous(ly)?|"
    r"think (hard|carefully)|reason (about|through)|formal(ly)? verif\w*|optimal strategy)\b",
    re.IGNORECASE,
)
_ANALYSIS_CUES = re.compile(
    r"\b(explain|why|compare|analy[sz]e|design|architecture|refactor|debug|trade-?offs?|"
    r"review|plan)\b",
    re.IGNORECASE,
)
_CODE = re.compile(r"```|\bdef |\bclass |\bfunction |#include|=>|\bSELECT\b")
# What `_CODE` can match starts with one of these: a text without any is not searched
# (the regex tries every alternative at every position).
_CODE_LITERALS = ("```", "def ", "class ", "function ", "#include", "=>", "SELECT")


def default_classify(messages: Sequence[Any], tools: Sequence[Any] | None = None) -> Tier:
    """A small heuristic tier classifier. **Replace it with a real classifier.**

    Looks at the latest user message and the size of the whole request:

    - REASONING: the latest user message asks for a proof, a derivation, step-by-step or
      careful reasoning;
    - COMPLEX: it contains code, the request offers tools, or the request is over ~2000
      tokens (UTF-8 bytes / 3);
    - MEDIUM: it asks to explain, compare, analyse, design, debug..., or the request is
      over ~300 tokens;
    - SIMPLE: anything else.
    """
    roles = [message_role(m) for m in messages]
    texts = [message_text(m) for m in messages]
    return classify_by_text(roles, texts, [utf8_len(t) for t in texts], tools)


#: The characters of the latest user message the cue patterns read, at each end: a long
#: message (a paste) is classified by its first and last ones, so the cost is bounded.
CLASSIFIED_CHARS = 16_384


def classify_by_text(
    roles: Sequence[str], texts: Sequence[str], sizes: Sequence[int], tools: Sequence[Any] | None
) -> Tier:
    """`default_classify` on messages already read: their roles, texts and UTF-8 sizes."""
    latest = ""
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            latest = texts[i]
            break
    if len(latest) > 2 * CLASSIFIED_CHARS:  # the ask is at its start or end, not in a paste
        latest = f"{latest[:CLASSIFIED_CHARS]}\n{latest[-CLASSIFIED_CHARS:]}"
    tokens = math.ceil(sum(sizes) / 3)
    if _REASONING_CUES.search(latest):
        return Tier.REASONING
    if tools or tokens > 2000 or (_has_any(latest, _CODE_LITERALS) and _CODE.search(latest)):
        return Tier.COMPLEX
    if tokens > 300 or _ANALYSIS_CUES.search(latest):
        return Tier.MEDIUM
    return Tier.SIMPLE


def _has_any(text: str, literals: Sequence[str]) -> bool:
    return any(literal in text for literal in literals)
