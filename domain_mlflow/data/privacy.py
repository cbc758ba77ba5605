"""Privacy redaction for training records, at three levels: ``low``, ``medium``, ``high``.

``low`` keeps text as it is. ``medium`` replaces what it finds with a placeholder
(``[SECRET]``, ``[EMAIL]``, ``[CARD]``, ``[SSN]``, ``[IP]``, ``[PHONE]``) and counts
each kind. ``high`` does the same, then drops records that still look personal.
Pure functions over precompiled regexes; nothing here does I/O.

Rules run in this order, because a placeholder hides its text from later rules:

1. secrets: PEM private-key blocks, JWTs, ``Bearer`` tokens, ``Authorization: Basic``
   credentials, passwords in URLs, ``key=value`` / ``"key": "value"`` where the key
   names a password, secret, token or API key (the value goes, the key stays), then
   ``sk-``, AWS (``AKIA``/``ASIA``) and GitHub (``ghp_``, ``github_pat_``) keys.
   First, since keys hold digits and ``@`` that later rules would take apart.
2. e-mail addresses, before anything numeric (``jo.1990@example.org``).
3. card numbers: 13-19 digits, plain or grouped by spaces or dashes, first digit
   2-6 (the major networks; keeps epoch-millisecond timestamps) and Luhn-valid.
   Before SSNs and phones, whose shapes overlap a card's groups.
4. US social security numbers, ``123-45-6789``.
5. IP addresses: IPv6 (eight groups, or compressed with ``::``), then IPv4.
6. phone numbers: ``+`` and 8-15 digits in groups, or ``(555) 123-4567``,
   ``555-123-4567``, ``555.123.4567`` (optionally after ``1-``).

The rules repeat until nothing changes (a placeholder can free a neighbour, as in
``a@b.io+44 20 7946 0958``), so redacting twice gives what redacting once gave.

``high`` drops a record in which an SSN was found, or whose redacted text still has
a name introduction ("my name is Ann", "I am Ann", "Dr. Lee"), a street address
("12 Baker Street"), or a date of birth ("born on", "date of birth", "DOB").

This is a heuristic, not a guarantee. Known limits:

- Names and addresses are never redacted, only detected at ``high``, and only in
  capitalised English phrasing; "I am Happy" is dropped, "i'm ann" is kept.
- Phones without ``+`` outside the US forms (``020 7946 0958``) are missed.
- Secrets in prose ("my password is x") or in SQL ``VALUES`` lists are missed;
  code such as ``password: str`` loses ``str``.
- Four-part versions (``1.2.3.4``) read as IPv4; Luhn-valid ids of 13-19 digits
  starting 2-6 read as cards; compressed IPv6 needs a digit and a group of 3+
  characters (so ``x[1::2]`` stays, and so does ``::1``).
- E-mail: ASCII local parts and a letter TLD; quoted or IDN addresses are missed.
- Only strings are inspected: a phone stored as a JSON number stays.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain_mlflow.exceptions import ConfigError

PRIVACY_LEVELS = ("low", "medium", "high")
# In rule order; see the module docstring.
REDACTION_KINDS = ("secret", "email", "card", "ssn", "ip", "phone")
PLACEHOLDERS: dict[str, str] = {kind: f"[{kind.upper()}]" for kind in REDACTION_KINDS}
DROPPED_PERSONAL = "dropped_personal"
STRUCTURAL_KEYS = frozenset({"domain_id", "role"})

# More passes than any real text needs; every pass that changes something removes
# unredacted characters, so the loop ends anyway.
_MAX_PASSES = 8

_ANY_PLACEHOLDER = "(?:" + "|".join(re.escape(p) for p in PLACEHOLDERS.values()) + ")"
_NON_DIGIT = re.compile(r"\D")

Span = tuple[int, int]


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    # The span to replace, or None to keep the match (and look again one character on).
    accept: Callable[[re.Match[str]], Span | None]


def _value_span(match: re.Match[str]) -> Span:
    """The ``value`` group (or ``value2``/``value3``) where the pattern has one, else all."""
    for name in ("value", "value2", "value3"):
        if name in match.re.groupindex and match.group(name) is not None:
            return match.span(name)
    return match.span()


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_span(match: re.Match[str]) -> Span | None:
    ends = [match.end()]
    if "tail" in match.re.groupindex and match.group("tail") is not None:
        ends.append(match.start("tail"))  # a CVV or stray digits after the number
    for end in ends:
        digits = _NON_DIGIT.sub("", match.string[match.start():end])
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits):
            return match.start(), end
    return None


def _international_phone_span(match: re.Match[str]) -> Span | None:
    digits = _NON_DIGIT.sub("", match.group())
    return match.span() if 8 <= len(digits) <= 15 else None


def _compressed_ipv6_span(match: re.Match[str]) -> Span | None:
    groups = [group for group in match.group().split(":") if group]
    plausible = (
        2 <= len(groups) <= 7
        and any(len(group) >= 3 for group in groups)
        and any(char.isdigit() for char in match.group())
    )
    return match.span() if plausible else None


_KEY_WORD = (
    r"(?:passw(?:or)?d|passphrase|pwd|secret|token"
    r"|(?:api|access|secret|private|signing|encryption)[_-]?key|apikey)"
)
# SQL and driver bind parameters are not secrets (`WHERE token = :token`), and the
# Bearer rule has already taken the token in `token: Bearer abc...`.
_BIND_PARAMETER = r"(?:\?|\$\d+|%s|%\(\w+\)s|[:@][A-Za-z_]\w*)(?=[\s,;)]|$)"
_QUOTED = r"(?:(?!{ph})(?:[^{q}\\\n]|\\.))+"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HEX = r"[0-9A-Fa-f]{1,4}"


def _rule(kind: str, pattern: str, accept: Callable[[re.Match[str]], Span | None] = _value_span,
          flags: int = 0) -> _Rule:
    return _Rule(kind, re.compile(pattern, flags), accept)


_RULES: tuple[_Rule, ...] = (
    # 1. secrets
    _rule("secret", r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?"
                    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)"),
    _rule("secret", r"(?<![\w-])eyJ[\w-]+\.eyJ[\w-]+\.[\w-]*"),
    _rule("secret", r"(?i:\bbearer)\s+(?P<value>(?=[\w.~+/-]*\d)[\w.~+/-]{8,}=*)"),
    _rule("secret", r"(?i:\bauthorization[\"']?\s*[:=]\s*[\"']?basic)\s+(?P<value>[\w+/-]+=*)"),
    _rule("secret", r"(?<=://)[^/\s:@\[\]]+:(?P<value>[^/\s@\[\]]+)@"),
    _rule(
        "secret",
        r"(?<![\w.-])[\"']?(?i:[\w.-]*?" + _KEY_WORD + r")[\"']?\s*(?:=>|:=|==?|:)[ \t]*"
        r"(?:\"(?P<value>" + _QUOTED.format(ph=_ANY_PLACEHOLDER, q='"') + r")\""
        r"|'(?P<value2>" + _QUOTED.format(ph=_ANY_PLACEHOLDER, q="'") + r")'"
        r"|(?!" + _ANY_PLACEHOLDER + "|" + _BIND_PARAMETER + r"|(?i:bearer|basic)\s)"
        r"(?P<value3>(?:(?!" + _ANY_PLACEHOLDER + r")[^\s\"'`,;&])+?)"
        r"(?=[\s\"'`,;&)}\]]|" + _ANY_PLACEHOLDER + r"|$))",
    ),
    _rule("secret", r"(?<![\w-])sk-(?=[\w-]*\d)[\w-]{16,}"),
    _rule("secret", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"),
    _rule("secret", r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,})"),
    # 2. e-mail; the look-behind starts only at the head of a run, keeping it linear.
    _rule("email", r"(?<![\w.%+-])[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}", flags=re.ASCII),
    # 3. cards: grouped 4-4-4-1..4 (+ up to 3), Amex/Diners 4-6-4..5, or plain.
    _rule(
        "card",
        r"(?<!\d)(?<!\d[.,])(?:\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}"
        r"(?P<tail>(?P=sep)\d{1,3})?|\d{4}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5})(?![.,]?\d)",
        _card_span,
    ),
    _rule("card", r"(?<!\d)(?<!\d[.,])\d{13,19}(?![.,]?\d)", _card_span),
    # 4. US SSN, without the never-issued areas 000, 666 and 9xx.
    _rule("ssn", r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"),
    # 5. IPv6 (full, then compressed), IPv4; never inside a longer dotted number.
    _rule("ip", r"(?<![\w:.])" + _HEX + r"(?::" + _HEX + r"){7}(?![\w:])(?!\.\d)"),
    _rule(
        "ip",
        r"(?<![\w:.])(?:" + _HEX + r"(?::" + _HEX + r"){0,6})?::(?:" + _HEX
        + r"(?::" + _HEX + r"){0,6})?(?![\w:])(?!\.\d)",
        _compressed_ipv6_span,
    ),
    _rule("ip", r"(?<!\d)(?<!\d\.)(?:" + _OCTET + r"\.){3}" + _OCTET + r"(?!\.?\d)"),
    # 6. phones: international (atomic groups keep digit runs from backtracking), US.
    _rule(
        "phone",
        r"(?<![\w+])\+\d{1,3}(?>[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}){1,6}(?!\w)",
        _international_phone_span,
    ),
    _rule(
        "phone",
        r"(?<![\w.+-])(?:1[ .-]?)?(?:\(\d{3}\) ?\d{3}[ .-]|\d{3}(?P<sep>[.-])\d{3}(?P=sep))"
        r"\d{4}(?![\w-])(?!\.\d)",
    ),
)

_PERSONAL_SIGNALS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("name", re.compile(r"\b(?i:my name is|my name's|i am|i['\u2019]m|call me)\s+[A-Z][a-z]+")),
    ("title", re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+[A-Z][a-z]+")),
    ("address", re.compile(
        r"\b\d{1,6}[A-Za-z]?\s+(?:[A-Z][a-z]+\.?\s+){1,4}"
        r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr|Court|Ct|Place|Pl"
        r"|Way|Terrace)\b"
    )),
    ("birth_date", re.compile(r"(?i:\bborn on\b|\bdate of birth\b)|\bD\.?O\.?B\b")),
)


def check_privacy_level(level: object) -> str:
    """``level`` if it is one of PRIVACY_LEVELS, else a ConfigError naming them."""
    if level not in PRIVACY_LEVELS:
        raise ConfigError(
            f"unknown privacy level {level!r}; use one of: {', '.join(PRIVACY_LEVELS)}"
        )
    return str(level)


def _apply(rule: _Rule, text: str) -> tuple[str, int]:
    pieces: list[str] = []
    done = position = found = 0
    while (match := rule.pattern.search(text, position)) is not None:
        span = rule.accept(match)
        if span is None:
            position = match.start() + 1
            continue
        pieces += [text[done:span[0]], PLACEHOLDERS[rule.kind]]
        done = position = max(span[1], match.start() + 1)
        found += 1
    if not found:
        return text, 0
    pieces.append(text[done:])
    return "".join(pieces), found


def redact_text(text: str) -> tuple[str, Counter[str]]:
    """``text`` with every finding replaced by its placeholder, and the count per kind."""
    counts: Counter[str] = Counter()
    for _ in range(_MAX_PASSES):
        changed = False
        for rule in _RULES:
            text, found = _apply(rule, text)
            if found:
                counts[rule.kind] += found
                changed = True
        if not changed:
            break
    return text, counts


def find_personal_signal(text: str) -> str | None:
    """The first ``high``-level signal in ``text`` (``name``, ``title``, ...), or None."""
    for name, pattern in _PERSONAL_SIGNALS:
        if pattern.search(text):
            return name
    return None


class Redactor:
    """Applies one privacy level to texts and records."""

    def __init__(self, level: str = "medium", structural_keys: Iterable[str] = STRUCTURAL_KEYS):
        self.level = check_privacy_level(level)
        self.structural_keys = frozenset(structural_keys)

    def redact_text(self, text: str) -> tuple[str, Counter[str]]:
        if self.level == "low":
            return text, Counter()
        return redact_text(text)

    def redact_record(self, record: dict[str, Any]) -> tuple[dict[str, Any] | None, Counter[str]]:
        """The redacted copy (``record`` itself at ``low``; None when dropped) and counts.

        A dropped record's counts hold what was found in it plus ``dropped_personal``.
        """
        counts: Counter[str] = Counter()
        if self.level == "low":
            return record, counts
        redacted = self._redact_value(record, counts)
        if self.level == "high" and (
            counts["ssn"] or any(map(find_personal_signal, self._strings(redacted)))
        ):
            counts[DROPPED_PERSONAL] += 1
            return None, counts
        return redacted, counts

    def redact_records(
        self, records: Iterable[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], RedactionReport]:
        """The records kept, redacted, and a report over all of them."""
        kept: list[dict[str, Any]] = []
        report = RedactionReport()
        for record in records:
            redacted, counts = self.redact_record(record)
            report.add(counts)
            if redacted is not None:
                kept.append(redacted)
        return kept, report

    def _redact_value(self, value: Any, counts: Counter[str]) -> Any:
        if isinstance(value, str):
            text, found = redact_text(value)
            counts.update(found)
            return text
        if isinstance(value, Mapping):
            return {
                key: item if key in self.structural_keys else self._redact_value(item, counts)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._redact_value(item, counts) for item in value]
        return value

    def _strings(self, value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if key not in self.structural_keys:
                    yield from self._strings(item)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from self._strings(item)


def redact_record(
    record: dict[str, Any], level: str = "medium"
) -> tuple[dict[str, Any] | None, Counter[str]]:
    """``Redactor(level).redact_record(record)``."""
    return Redactor(level).redact_record(record)


@dataclass
class RedactionReport:
    """What redaction did over many records, ready to log as MLflow metrics."""

    counts: Counter[str] = field(default_factory=Counter)
    records_seen: int = 0
    records_kept: int = 0
    records_dropped: int = 0

    def add(self, counts: Counter[str]) -> None:
        """Count one record from the counts ``redact_record`` returned for it."""
        self.records_seen += 1
        if counts[DROPPED_PERSONAL]:
            self.records_dropped += 1
        else:
            self.records_kept += 1
        self.counts.update({kind: n for kind, n in counts.items() if kind != DROPPED_PERSONAL})

    def merge(self, other: RedactionReport) -> RedactionReport:
        """A new report holding both."""
        return RedactionReport(
            counts=self.counts + other.counts,
            records_seen=self.records_seen + other.records_seen,
            records_kept=self.records_kept + other.records_kept,
            records_dropped=self.records_dropped + other.records_dropped,
        )

    def as_dict(self) -> dict[str, int]:
        """``redacted_<kind>`` for every kind (zeros included) and the record counts."""
        metrics = {f"redacted_{kind}": self.counts[kind] for kind in REDACTION_KINDS}
        metrics.update(
            privacy_records_seen=self.records_seen,
            privacy_records_kept=self.records_kept,
            privacy_records_dropped=self.records_dropped,
        )
        return metrics
