"""Secrets out of text: what parsing finds in URLs and DSNs, and known values anywhere.

:func:`redact` masks what parsing finds: a URL's password (``user:pw@``, ``:pw@``),
secret query parameters (``?password=``, ``&api_key=``, any case), libpq
``key=value`` secrets (``password=...``, parsed by psycopg when the text is one
DSN), ``"password": "..."`` pairs and ``Bearer`` tokens, in a URL or DSN of its
own or anywhere inside a longer message. A :class:`Redactor` also knows the
secret values of the settings (``LOCALAI_API_KEY``, ``WEBHOOK_SECRET``, every DSN
and URL password) and masks them wherever they appear, raw, percent-encoded or
escaped: in a driver's error text, say. Values shorter than
:data:`MIN_LITERAL_LENGTH` are masked only where parsing finds them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from domain_mlflow.exceptions import ConfigError

if TYPE_CHECKING:
    from domain_mlflow.settings import Settings

MASK = "***"
MIN_LITERAL_LENGTH = 4
SECRET_KEYS = frozenset({
    "password", "pass", "passwd", "pwd", "sslpassword", "secret", "client_secret",
    "webhook_secret", "api_key", "apikey", "api-key", "token", "access_token",
    "auth_token", "refresh_token", "id_token", "private_key", "access_key", "secret_key",
})

_KEYS = "|".join(sorted(map(re.escape, SECRET_KEYS), key=len, reverse=True))
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
_URL_TRAILING = "'\"),.;:]}>"
# libpq's grammar: a value is '...' or runs to white space, \ escaping in both.
_KEY_VALUE = re.compile(
    rf"(?i)(?<![\w-])({_KEYS})(\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:[^\s\\]|\\.)*)")
_QUOTED_PAIR = re.compile(rf"""(?i)(["'])({_KEYS})\1(\s*:\s*)(["'])(?:(?!\4)[^\\]|\\.)*\4?""")
_BEARER = re.compile(r"(?i)\b(bearer|authorization\s*[:=]\s*basic)(\s+)[A-Za-z0-9._~+/=\-]+")


def is_secret_key(name: str) -> bool:
    return unquote_plus(name).strip().lower() in SECRET_KEYS


def _split_url(url: str) -> tuple[str, str, str, str, str]:
    """(``scheme://``, authority, path, query, fragment), split as urllib splits them
    but without re-encoding anything: the text comes back exactly when joined."""
    head, separator, rest = url.partition("://")
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    end = min(ends, default=len(rest))
    authority, tail = rest[:end], rest[end:]
    tail, hash_, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    return head + separator, authority, path, question + query, hash_ + fragment


def _url_password(authority: str) -> str | None:
    userinfo, at, _ = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return None  # no userinfo, or a user name alone (libpq and redis-py read it so)
    return userinfo.partition(":")[2]


def _query_pairs(query: str) -> list[tuple[str, str, str]]:
    return [pair.partition("=") for pair in query.lstrip("?").split("&")]


def _redact_url(url: str) -> str:
    head, authority, path, query, fragment = _split_url(url)
    if _url_password(authority) is not None:
        userinfo, _, host = authority.rpartition("@")
        authority = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    if query:
        query = "?" + "&".join(
            f"{key}={MASK}" if equals and is_secret_key(key) and value else key + equals + value
            for key, equals, value in _query_pairs(query))
    return head + authority + path + query + fragment


def _redact_conninfo(text: str) -> str | None:
    """A libpq ``key=value`` DSN with its secrets masked; None if ``text`` is not one."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(text)
    except Exception:  # not a DSN (or no psycopg): the text is a message
        return None
    if not params or not any(is_secret_key(key) for key in params):
        return text if params else None
    masked = _redact_pairs(text)  # as written, in the user's order
    with contextlib.suppress(Exception):
        if all(v == MASK for k, v in conninfo_to_dict(masked).items() if is_secret_key(k)):
            return masked
    return make_conninfo("", **{key: MASK if is_secret_key(key) else value
                                for key, value in params.items()})


def _redact_pairs(text: str) -> str:
    text = _KEY_VALUE.sub(lambda m: f"{m[1]}{m[2]}{MASK}" if m[3] else m[0], text)
    text = _QUOTED_PAIR.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{MASK}{m[4]}", text)
    return _BEARER.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)


def redact(text: str) -> str:
    """``text`` with every secret that parsing finds replaced by ``***``: a URL or DSN
    of its own, or a message with URLs, DSNs and ``key=value`` pairs inside it."""
    if not isinstance(text, str):
        text = str(text)
    if "=" in text and "://" not in text:
        whole = _redact_conninfo(text)
        if whole is not None:
            return whole
    parts, position = [], 0
    for match in _URL_IN_TEXT.finditer(text):
        url = match[0].rstrip(_URL_TRAILING)
        parts += [_redact_pairs(text[position:match.start()]), _redact_url(url)]
        position = match.start() + len(url)
    parts.append(_redact_pairs(text[position:]))
    return "".join(parts)


def secrets_in(value: str | None) -> list[str]:
    """The secret values a URL or libpq DSN carries: its password and secret parameters."""
    if not value:
        return []
    found: list[str] = []
    if "://" in value:
        _, authority, _, query, _ = _split_url(value)
        found += [p for p in [_url_password(authority)] if p]
        found += [v for k, eq, v in _query_pairs(query) if eq and v and is_secret_key(k)]
    try:  # what libpq itself reads, decoded (URL or key=value)
        from psycopg.conninfo import conninfo_to_dict

        found += [v for k, v in conninfo_to_dict(value).items() if is_secret_key(k) and v]
    except Exception:  # not a libpq DSN
        pass
    return found


def _literal_forms(secret: str) -> set[str]:
    """How a secret may be written in a message: raw, decoded, encoded, escaped."""
    forms = set()
    for raw in {secret, unquote(secret), unquote_plus(secret)}:
        forms |= {raw, quote(raw, safe=""), quote_plus(raw, safe=""), quote(raw),
                  json.dumps(raw)[1:-1], raw.encode("unicode_escape").decode("ascii"),
                  repr(raw)[1:-1]}
    return {form for form in forms if len(form) >= MIN_LITERAL_LENGTH}


class Redactor:
    """:func:`redact` plus the literal secret values it was given, masked anywhere."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        forms = set().union(*(_literal_forms(s) for s in secrets if s))
        self._forms = sorted(forms, key=len, reverse=True)

    @classmethod
    def for_urls(cls, *urls: str | None) -> Redactor:
        """Knows the passwords and secret parameters of ``urls`` (URLs or DSNs)."""
        return cls(secret for url in urls for secret in secrets_in(url))

    @classmethod
    def from_settings(cls, settings: Settings, *urls: str | None) -> Redactor:
        """Knows every secret of ``settings``, and those of ``urls`` (overrides)."""
        carriers = (settings.postgres_dsn, settings.redis_url, settings.localai_url,
                    settings.alert_webhook_url, settings.mlflow_tracking_uri,
                    settings.mlflow_ui_url, *urls)
        values = [settings.localai_api_key, settings.webhook_secret]
        return cls([*values, *(secret for url in carriers for secret in secrets_in(url))])

    @classmethod
    def from_environment(cls) -> Redactor:
        """Knows the secrets of the environment's settings; with settings that do not
        load (the caller reports that), only what parsing finds."""
        from domain_mlflow.settings import load_settings  # settings imports this module

        try:
            return cls.from_settings(load_settings())
        except ConfigError:
            return cls()

    def __call__(self, text: object) -> str:
        text = text if isinstance(text, str) else str(text)
        for form in self._forms:
            text = text.replace(form, MASK)
        return redact(text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._forms)} literal forms)"


class RedactingFilter(logging.Filter):
    """On a handler: every record's message and traceback pass through ``redact``."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it when it formats
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True
