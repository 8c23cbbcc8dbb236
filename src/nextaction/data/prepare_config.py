"""The typed configs of ``prepare``: :class:`PrepareConfig` and its parts, with their dict and CLI forms."""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import polars as pl

from nextaction.config import known_options
from nextaction.data.schema import (
    BEHAVIOR,
    DEFAULT_BEHAVIOR,
    EVENT_COLUMNS,
    ITEM_ID,
    TIMESTAMP,
    USER_ID,
    VALUE,
)
from nextaction.data.social import SocialConfig
from nextaction.data.splits import SplitConfig, parse_time
from nextaction.data.vocab import normalize_behavior
from nextaction.errors import InputError

# ---------------------------------------------------------------------------------------------- configs


def _check_int(what: str, value: Any, *, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _check_bool(what: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{what} must be true or false, got {value!r}")


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """CLI form of a small mapping: ``"pv=view, clk=click"`` → ``{"pv": "view", "clk": "click"}``."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"bad {what} entry {part!r}: write name=value pairs separated by commas")
        pairs[key.strip()] = value.strip()
    return pairs


PolicyKind = Literal["drop", "default", "keep", "fill"]
# Which policies make sense per column: ids and times have no default, a behaviour cannot stay null.
_ALLOWED_POLICIES: Final[Mapping[str, tuple[str, ...]]] = {
    USER_ID: ("drop", "fill:<id>"),
    ITEM_ID: ("drop", "fill:<id>"),
    TIMESTAMP: ("drop", "fill:<epoch ms or ISO time>"),
    BEHAVIOR: ("drop", "default", "fill:<behaviour>"),
    VALUE: ("keep", "default", "drop", "fill:<number>"),
}


@dataclass(frozen=True, kw_only=True)
class MissingPolicy:
    """A parsed missing-value policy for one column."""

    kind: PolicyKind
    fill: str | int | float | None = None

    @classmethod
    def parse(cls, column: str, text: str) -> MissingPolicy:
        allowed = _ALLOWED_POLICIES[column]
        kind, _, arg = str(text).partition(":")
        kind = kind.strip().lower()
        usage = f"missing-value policy for {column} must be one of {', '.join(allowed)}, got {text!r}"
        if kind == "fill":
            if not arg:
                raise InputError(usage)
            if column == TIMESTAMP:
                return cls(kind="fill", fill=parse_time(arg))
            if column == VALUE:
                try:
                    return cls(kind="fill", fill=float(arg))
                except ValueError:
                    raise InputError(usage) from None
            return cls(kind="fill", fill=arg)
        if arg or kind not in allowed:
            raise InputError(usage)
        if kind == "default" and column == BEHAVIOR:
            return cls(kind="fill", fill=DEFAULT_BEHAVIOR)
        if kind == "default":  # the value column's default is "no value"
            return cls(kind="keep")
        return cls(kind=kind)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class MissingConfig:
    """Missing-value policy per column: ``drop`` (reject the row), ``default`` (behaviour →
    ``interact``; value → stays null), ``keep`` (value only) or ``fill:<value>``."""

    user_id: str = "drop"
    item_id: str = "drop"
    timestamp: str = "drop"
    behavior: str = "default"
    value: str = "keep"

    def __post_init__(self) -> None:
        for column in EVENT_COLUMNS:
            self.policy(column)

    def policy(self, column: str) -> MissingPolicy:
        return MissingPolicy.parse(column, getattr(self, column))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MissingConfig:
        return cls(**known_options(cls, data, "missing"))

    @classmethod
    def parse(cls, text: str) -> MissingConfig:
        """CLI form: ``"behavior=drop, value=fill:0"`` (columns not named keep their defaults)."""
        return cls.from_dict(parse_pairs(text, "missing-value policy"))


_OPS: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_CLAUSE = re.compile(r"^value\s*(>=|<=|==|!=|>|<)\s*([^:\s]+)\s*:\s*(\S.*)$", re.IGNORECASE)
_ELSE = re.compile(r"^else\s*:\s*(\S.*)$", re.IGNORECASE)
_RULE_USAGE = "write it like 'value>=4:like,else:watch' (operators >= > <= < == !=)"


@dataclass(frozen=True, kw_only=True)
class ValueClause:
    op: str
    threshold: float
    behavior: str

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise InputError(f"value rule operator {self.op!r} is unknown; {_RULE_USAGE}")
        object.__setattr__(self, "behavior", normalize_behavior(self.behavior))


@dataclass(frozen=True, kw_only=True)
class ValueRule:
    """Behaviour from the event's value: the first matching clause wins, else ``otherwise`` (when set).

    Rows without a value, or matching nothing with no ``otherwise``, keep their behaviour.
    """

    clauses: tuple[ValueClause, ...]
    otherwise: str | None = None

    def __post_init__(self) -> None:
        if not self.clauses:
            raise InputError(f"a value rule needs at least one clause; {_RULE_USAGE}")
        if self.otherwise is not None:
            object.__setattr__(self, "otherwise", normalize_behavior(self.otherwise))

    @classmethod
    def parse(cls, text: str) -> ValueRule:
        """``"value>=4:like,else:watch"`` → ``ValueRule`` (the CLI form)."""
        clauses: list[ValueClause] = []
        otherwise = None
        parts = [p.strip() for p in str(text).split(",")]
        for i, part in enumerate(parts):
            if (m := _ELSE.match(part)) and i == len(parts) - 1:
                otherwise = m.group(1)
            elif m := _CLAUSE.match(part):
                try:
                    threshold = float(m.group(2))
                except ValueError:
                    raise InputError(f"bad value rule clause {part!r}; {_RULE_USAGE}") from None
                clauses.append(ValueClause(op=m.group(1), threshold=threshold, behavior=m.group(3)))
            else:
                raise InputError(f"bad value rule clause {part!r}; {_RULE_USAGE}")
        return cls(clauses=tuple(clauses), otherwise=otherwise)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValueRule:
        kwargs = known_options(cls, data, "value rule")
        kwargs["clauses"] = tuple(
            c if isinstance(c, ValueClause) else ValueClause(**known_options(ValueClause, c, "value clause"))
            for c in kwargs.get("clauses", ())
        )
        return cls(**kwargs)

    def __str__(self) -> str:
        text = ",".join(f"value{c.op}{c.threshold:g}:{c.behavior}" for c in self.clauses)
        return text + (f",else:{self.otherwise}" if self.otherwise else "")

    def behaviors(self) -> set[str]:
        return {c.behavior for c in self.clauses} | ({self.otherwise} if self.otherwise else set())

    def expr(self, current: pl.Expr, codes: Mapping[str, int]) -> pl.Expr:
        """A Polars expression giving the new behaviour code, from the current code and VALUE."""
        value = pl.col(VALUE)
        chain = pl.when(value.is_null()).then(current)
        for c in self.clauses:
            chain = chain.when(_OPS[c.op](value, c.threshold)).then(pl.lit(codes[c.behavior], pl.Int32))
        fallback = current if self.otherwise is None else pl.lit(codes[self.otherwise], pl.Int32)
        return chain.otherwise(fallback)


@dataclass(frozen=True, kw_only=True)
class BehaviorConfig:
    """Behaviour renaming. ``aliases`` overrides and extends the built-in aliases (``pv``→``view``,
    ``addtocart``→``cart``, ``transaction``→``buy`` …); names are case-insensitive. ``keep`` is an optional
    whitelist applied after renaming and the value rule."""

    aliases: Mapping[str, str] = field(default_factory=dict)
    builtin_aliases: bool = True
    keep: tuple[str, ...] | None = None
    value_rule: ValueRule | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.aliases, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.aliases.items()
        ):
            raise InputError("behaviour aliases must map names to names, e.g. {'pv': 'view'}")
        _check_bool("behaviors.builtin_aliases", self.builtin_aliases)
        if self.keep is not None:
            if isinstance(self.keep, str) or not all(isinstance(k, str) for k in self.keep):
                raise InputError("behaviors.keep must be a list of behaviour names")
            if not self.keep:
                raise InputError("behaviors.keep is empty, which would drop every event; leave it unset")
            object.__setattr__(self, "keep", tuple(normalize_behavior(k) for k in self.keep))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BehaviorConfig:
        kwargs = known_options(cls, data, "behaviors")
        rule = kwargs.get("value_rule")
        if isinstance(rule, str):
            kwargs["value_rule"] = ValueRule.parse(rule)
        elif isinstance(rule, Mapping):
            kwargs["value_rule"] = ValueRule.from_dict(rule)
        if isinstance(kwargs.get("keep"), list):
            kwargs["keep"] = tuple(kwargs["keep"])
        return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """``exact``: drop exact duplicates of (user, item, timestamp, behaviour, value), keeping the first line.
    ``window_seconds``: also drop an event when the same (user, item, behaviour) happened at most that many
    seconds before (the previous occurrence, so a burst of repeats keeps only its first event)."""

    exact: bool = True
    window_seconds: float | None = None

    def __post_init__(self) -> None:
        _check_bool("dedup.exact", self.exact)
        w = self.window_seconds
        if w is not None and (isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0):
            raise InputError(f"dedup.window_seconds must be a number >= 0 or unset, got {w!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DedupConfig:
        return cls(**known_options(cls, data, "dedup"))


@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """``max_seq_len`` keeps each user's most recent events; then users with fewer than
    ``max(min_user_events, min_seq_len)`` events and items with fewer than ``min_item_events`` are removed
    repeatedly until none is left (a k-core). 0 (the default) means no filtering."""

    min_user_events: int = 0
    min_item_events: int = 0
    min_seq_len: int = 0
    max_seq_len: int | None = None

    def __post_init__(self) -> None:
        _check_int("filters.min_user_events", self.min_user_events)
        _check_int("filters.min_item_events", self.min_item_events)
        _check_int("filters.min_seq_len", self.min_seq_len)
        if self.max_seq_len is not None:
            _check_int("filters.max_seq_len", self.max_seq_len, minimum=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilterConfig:
        return cls(**known_options(cls, data, "filters"))


@dataclass(frozen=True, kw_only=True)
class PseudonymConfig:
    """Replace user ids by a keyed HMAC-SHA256 (first ``hex_chars`` hex digits) so raw ids never reach disk.

    The key comes from ``key`` or the environment variable ``NEXTACTION_HMAC_KEY``; it is never reported.
    """

    enabled: bool = False
    key: str | None = field(default=None, repr=False)
    hex_chars: int = 16

    def __post_init__(self) -> None:
        _check_bool("pseudonymize.enabled", self.enabled)
        _check_int("pseudonymize.hex_chars", self.hex_chars, minimum=8)
        if self.hex_chars > 64:
            raise InputError("pseudonymize.hex_chars must be at most 64 (a SHA-256 digest)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PseudonymConfig:
        return cls(**known_options(cls, data, "pseudonymize"))


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """Everything ``prepare`` does, as data. ``strict``: any rejected row is an error."""

    missing: MissingConfig = field(default_factory=MissingConfig)
    behaviors: BehaviorConfig = field(default_factory=BehaviorConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    pseudonymize: PseudonymConfig = field(default_factory=PseudonymConfig)
    social: SocialConfig = field(default_factory=SocialConfig)
    strict: bool = False

    def __post_init__(self) -> None:
        _check_bool("strict", self.strict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrepareConfig:
        kwargs = known_options(cls, data, "prepare")
        nested: dict[str, Any] = {
            "missing": MissingConfig,
            "behaviors": BehaviorConfig,
            "dedup": DedupConfig,
            "filters": FilterConfig,
            "split": SplitConfig,
            "pseudonymize": PseudonymConfig,
            "social": SocialConfig,
        }
        for name, sub in nested.items():
            if name in kwargs and not isinstance(kwargs[name], sub):
                kwargs[name] = sub.from_dict(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the report; the HMAC key is never included."""
        data = dataclasses.asdict(self)
        rule = self.behaviors.value_rule
        data["behaviors"]["value_rule"] = None if rule is None else str(rule)
        data["behaviors"]["aliases"] = dict(self.behaviors.aliases)
        if self.behaviors.keep is not None:
            data["behaviors"]["keep"] = list(self.behaviors.keep)
        data["pseudonymize"]["key"] = "<set>" if self.pseudonymize.key else None
        return data


__all__ = [
    "BehaviorConfig",
    "DedupConfig",
    "FilterConfig",
    "MissingConfig",
    "MissingPolicy",
    "PrepareConfig",
    "PseudonymConfig",
    "SocialConfig",
    "SplitConfig",
    "ValueClause",
    "ValueRule",
    "parse_pairs",
]
