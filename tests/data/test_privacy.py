"""Privacy redaction: each kind found and left alone, records at each level, the report."""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain_mlflow.data.privacy import (
    DROPPED_PERSONAL,
    PLACEHOLDERS,
    PRIVACY_LEVELS,
    REDACTION_KINDS,
    RedactionReport,
    Redactor,
    find_personal_signal,
    luhn_valid,
    redact_record,
    redact_text,
)
from domain_mlflow.exceptions import ConfigError

_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
# The autouse MLflow fixture is per test; these properties never touch it.
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]
_JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        # e-mail
        ("write to john.doe+news@example.co.uk.", "write to [EMAIL].", "email"),
        ("<a.b_c@sub.example.org>", "<[EMAIL]>", "email"),
        # phones
        ("call +44 20 7946 0958 today", "call [PHONE] today", "phone"),
        ("+1 (555) 123-4567", "[PHONE]", "phone"),
        ("+14155552671", "[PHONE]", "phone"),
        ("office (555) 123-4567", "office [PHONE]", "phone"),
        ("555-123-4567", "[PHONE]", "phone"),
        ("555.123.4567", "[PHONE]", "phone"),
        ("1-800-555-0199", "[PHONE]", "phone"),
        # IPs
        ("from 192.168.1.10, ok", "from [IP], ok", "ip"),
        ("0.0.0.0 and 255.255.255.255", "[IP] and [IP]", "ip"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "[IP]", "ip"),
        ("ping 2001:db8::1 now", "ping [IP] now", "ip"),
        ("fe80::1ff:fe23:4567:890a", "[IP]", "ip"),
        # cards
        ("visa 4111 1111 1111 1111 exp", "visa [CARD] exp", "card"),
        ("4111-1111-1111-1111", "[CARD]", "card"),
        ("4111111111111111", "[CARD]", "card"),
        ("amex 3782 822463 10005", "amex [CARD]", "card"),
        ("378282246310005", "[CARD]", "card"),
        ("4111 1111 1111 1111 123", "[CARD] 123", "card"),
        # SSN
        ("ssn 123-45-6789.", "ssn [SSN].", "ssn"),
        # secrets
        ("key sk-abc123def456ghi789jkl", "key [SECRET]", "secret"),
        ("sk-proj-Ab3dEf6hIj9kLm2nOp5q", "[SECRET]", "secret"),
        ("AKIAIOSFODNN7EXAMPLE", "[SECRET]", "secret"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[SECRET]", "secret"),
        ("Authorization: Bearer abc.def-123_xyz", "Authorization: Bearer [SECRET]", "secret"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [SECRET]", "secret"),
        (f"token {_JWT} end", "token [SECRET] end", "secret"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK==\n-----END RSA PRIVATE KEY----- x",
            "[SECRET] x",
            "secret",
        ),
        ("password=hunter2 user=bob", "password=[SECRET] user=bob", "secret"),
        ('{"password": "s3 cr3t"}', '{"password": "[SECRET]"}', "secret"),
        ("SECRET_KEY='django-insecure'", "SECRET_KEY='[SECRET]'", "secret"),
        ("X-Api-Key: abc", "X-Api-Key: [SECRET]", "secret"),
        ("?access_token=abc&page=2", "?access_token=[SECRET]&page=2", "secret"),
        ("WHERE api_token = 'abc'", "WHERE api_token = '[SECRET]'", "secret"),
        ("token: Bearer abc12345678", "token: Bearer [SECRET]", "secret"),
        ("postgresql://app:pa55@db.local:5432/x", "postgresql://app:[SECRET]@db.local:5432/x",
         "secret"),
    ],
)
def test_each_kind_is_replaced_by_its_placeholder_and_counted(text, expected, kind):
    redacted, counts = redact_text(text)
    assert redacted == expected
    assert counts == Counter({kind: expected.count(PLACEHOLDERS[kind])})


@pytest.mark.parametrize(
    "text",
    [
        "SELECT * FROM orders WHERE id = 12345 LIMIT 10",
        "SELECT count(*) FROM t WHERE year = 2024 AND price > 19.99",
        "on 2024-11-04 at 12:30:45, 2024-11-04T12:30:45+05:30",
        "pi is 3.14159265358979 and 1e-10",
        "version 1.2.3 and 1.2.3.4.5 and 256.1.1.1",
        "4111 1111 1111 1112",  # fails Luhn
        "4111111111111112",
        "epoch ms 1700000000000",  # Luhn or not, no card network starts with 1
        "x[1::2], a[::-1], std::vector<int>, Foo::Bar, ::",
        "12:30 and 1:2:3:4",
        "ids 12345 678901 and 555 1234",
        "000-12-3456 and 123-00-4567",  # SSNs never issued
        "max_tokens=100 token_count: 5 tokenizer=bpe password_hash",
        "WHERE token = :token AND pwd = ? AND secret = $1",
        "the bearer of bad news; Basic SQL; task-force sk-learn",
        "user@localhost and @mention and a@b",
        "call 1+2+3 or +5",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == (text, Counter())


def test_cards_are_checked_with_luhn():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert redact_text("4111 1111 1111 1111 / 4111 1111 1111 1112")[0] == (
        "[CARD] / 4111 1111 1111 1112"
    )


def test_a_number_before_a_card_does_not_hide_it():
    assert redact_text("order 1234 4111 1111 1111 1111")[0] == "order 1234 [CARD]"


def test_earlier_rules_win_and_placeholders_free_their_neighbours():
    # the card is not read as two phones, the key's digits not as a phone
    assert redact_text("4111-1111-1111-1111")[1] == Counter(card=1)
    assert redact_text("password=555-123-4567")[0] == "password=[SECRET]"
    assert redact_text("a@b.io+44 20 7946 0958")[0] == "[EMAIL][PHONE]"


def _chat_record() -> dict:
    return {
        "domain_id": "0x5678-SQLAgent",
        "messages": [
            {"role": "system", "content": "You write SQL."},
            {"role": "user", "content": "mail a@example.com, ip 10.0.0.7"},
            {"role": "assistant", "content": ["SELECT 1;", {"note": "call 555-123-4567"}]},
        ],
        "weight": 3,
        "meta": None,
    }


def test_medium_redacts_nested_chat_content_but_not_structural_keys():
    record = _chat_record()
    original = copy.deepcopy(record)

    redacted, counts = redact_record(record, "medium")

    assert redacted == {
        "domain_id": "0x5678-SQLAgent",
        "messages": [
            {"role": "system", "content": "You write SQL."},
            {"role": "user", "content": "mail [EMAIL], ip [IP]"},
            {"role": "assistant", "content": ["SELECT 1;", {"note": "call [PHONE]"}]},
        ],
        "weight": 3,
        "meta": None,
    }
    assert counts == Counter(email=1, ip=1, phone=1)
    assert record == original  # the input is not changed


def test_structural_keys_are_kept_even_when_they_look_sensitive():
    record = {"domain_id": "555-123-4567", "role": "a@b.io", "prompt": "a@b.io"}
    assert redact_record(record, "medium")[0] == {
        "domain_id": "555-123-4567", "role": "a@b.io", "prompt": "[EMAIL]"
    }


def test_low_returns_the_record_itself_with_no_counts():
    record = _chat_record()
    redacted, counts = redact_record(record, "low")
    assert redacted is record
    assert counts == Counter()
    assert Redactor("low").redact_text("a@b.io") == ("a@b.io", Counter())


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("Hi, my name is Alice Smith.", "name"),
        ("I am Bob and I need a query", "name"),
        ("I'm Carol", "name"),
        ("Ask Dr. Watson", "title"),
        ("Mrs Hudson called", "title"),
        ("ship to 221B Baker Street", "address"),
        ("at 12 Elm St. tomorrow", "address"),
        ("1600 Pennsylvania Ave", "address"),
        ("she was born on 4 May", "birth_date"),
        ("DOB: [SSN]", "birth_date"),
        ("Date of birth unknown", "birth_date"),
    ],
)
def test_high_drops_records_that_still_look_personal(text, signal):
    assert find_personal_signal(text) == signal
    redacted, counts = redact_record({"prompt": text, "completion": "ok"}, "high")
    assert redacted is None
    assert counts[DROPPED_PERSONAL] == 1


@pytest.mark.parametrize(
    "text",
    ["I am a developer", "SELECT name FROM users LIMIT 10", "This is Python", "3 way join",
     "step 2 Road map", "the DOBBY table"],
)
def test_high_keeps_text_with_no_personal_signal(text):
    record = {"prompt": text, "completion": "mail a@b.io"}
    redacted, counts = redact_record(record, "high")
    assert redacted == {"prompt": text, "completion": "mail [EMAIL]"}
    assert counts == Counter(email=1)


def test_high_drops_a_record_with_an_ssn_and_medium_only_redacts_it():
    record = {"prompt": "my ssn is 123-45-6789"}
    assert redact_record(record, "medium") == ({"prompt": "my ssn is [SSN]"}, Counter(ssn=1))
    assert redact_record(record, "high") == (None, Counter(ssn=1, dropped_personal=1))


def test_high_ignores_structural_keys_when_judging():
    record = {"role": "I am Alice", "content": "SELECT 1"}
    assert redact_record(record, "high")[0] == record


@pytest.mark.parametrize("level", ["extreme", "Medium", "", None, 2])
def test_unknown_level_is_a_config_error_naming_the_allowed_ones(level):
    with pytest.raises(ConfigError, match="low, medium, high"):
        Redactor(level)
    with pytest.raises(ConfigError):
        redact_record({"prompt": "x"}, level)


def test_report_counts_records_and_kinds_and_merges():
    records = [
        {"prompt": "a@b.io and c@d.io"},
        {"prompt": "my name is Eve, ip 1.2.3.4"},
        {"prompt": "SELECT 1"},
    ]
    kept, report = Redactor("high").redact_records(records)

    assert kept == [{"prompt": "[EMAIL] and [EMAIL]"}, {"prompt": "SELECT 1"}]
    metrics = report.as_dict()
    assert metrics == {
        "redacted_secret": 0, "redacted_email": 2, "redacted_card": 0, "redacted_ssn": 0,
        "redacted_ip": 1, "redacted_phone": 0, "privacy_records_seen": 3,
        "privacy_records_kept": 2, "privacy_records_dropped": 1,
    }
    merged = report.merge(report)
    assert merged.as_dict()["redacted_email"] == 4
    assert merged.as_dict()["privacy_records_seen"] == 6
    assert report.as_dict() == metrics  # merge makes a new report
    assert set(RedactionReport().as_dict()) == set(metrics)
    assert PRIVACY_LEVELS == ("low", "medium", "high")


def test_long_adversarial_inputs_finish():
    for text in ["a." * 20000, "1" * 40000, "a@" * 20000, "1:" * 20000, "+1 " * 10000,
                 "password=" + "a" * 40000, '"token": "' + "a" * 40000, "4111 " * 8000]:
        redacted, counts = redact_text(text)
        assert sum(counts.values()) == len(_PLACEHOLDER.findall(redacted))


# --- properties -------------------------------------------------------------------------

def _luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


def _format_card(digits: str, style: str) -> str:
    if style == "plain":
        return digits
    sep = " " if style == "spaces" else "-"
    if len(digits) == 15 and digits[:2] in ("34", "37"):
        return sep.join([digits[:4], digits[4:10], digits[10:]])
    groups = [digits[i:i + 4] for i in range(0, 16, 4)] + ([digits[16:]] if digits[16:] else [])
    return sep.join(g for g in groups if g)


_cards = st.builds(
    lambda first, rest, style: _format_card(_luhn_complete(first + rest), style),
    st.sampled_from("23456"),
    st.integers(11, 17).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
    st.sampled_from(["plain", "spaces", "dashes"]),
)
_amex = st.builds(
    lambda prefix, rest, style: _format_card(_luhn_complete(prefix + rest), style),
    st.sampled_from(["34", "37"]), st.text("0123456789", min_size=12, max_size=12),
    st.sampled_from(["plain", "spaces", "dashes"]),
)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"[A-Za-z0-9]+([._+-][A-Za-z0-9]+){0,2}", fullmatch=True),
    st.lists(_label, min_size=1, max_size=3),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)
_ipv4 = st.lists(st.integers(0, 255), min_size=4, max_size=4).map(
    lambda octets: ".".join(map(str, octets))
)
_pii = st.one_of(_emails, _ipv4, _cards, _amex)
_fragments = st.sampled_from([
    "password=", '"token": "', "Bearer ", "+44 ", "+", "::", ":", "-", ".", "@", " ", "\n",
    "sk-", "4111", "555-123-4567", "123-45-6789", "2001:db8::", "my name is ",
    *PLACEHOLDERS.values(),
])
_messy_text = st.lists(
    st.one_of(st.text(max_size=12), st.text("0123456789 .-:@+()", max_size=12), _fragments, _pii),
    max_size=10,
).map("".join)
_records = st.recursive(
    st.none() | st.booleans() | st.integers() | _messy_text,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["content", "role", "domain_id", "prompt", "x"]), children,
                      max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(text=st.one_of(st.text(), _messy_text))
def test_redaction_never_raises_and_is_idempotent(text):
    once, counts = redact_text(text)
    assert redact_text(once) == (once, Counter())
    assert all(n > 0 for n in counts.values())
    assert set(counts) <= set(REDACTION_KINDS)


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(text=_messy_text)
def test_counts_sum_to_the_placeholders_inserted(text):
    redacted, counts = redact_text(text)
    for kind, placeholder in PLACEHOLDERS.items():
        assert redacted.count(placeholder) - text.count(placeholder) == counts[kind]


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(before=st.text(max_size=20), pii=_pii, after=st.text(max_size=20))
def test_embedded_email_ip_or_card_never_survives(before, pii, after):
    redacted, counts = redact_text(f"{before} {pii} {after}")
    assert pii not in redacted
    assert sum(counts.values()) >= 1


@settings(max_examples=100, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(record=st.dictionaries(st.text(max_size=8), _records, max_size=4))
def test_low_is_identity_and_record_counts_match_placeholders(record):
    assert redact_record(record, "low") == (record, Counter())

    redacted, counts = redact_record(record, "medium")
    inserted = _count_placeholders(redacted) - _count_placeholders(record)
    assert sum(counts.values()) == inserted
    assert redact_record(redacted, "medium") == (redacted, Counter())


def _count_placeholders(value: object) -> int:
    if isinstance(value, str):
        return len(_PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return sum(_count_placeholders(v) for k, v in value.items()
                   if k not in ("domain_id", "role"))
    if isinstance(value, list):
        return sum(_count_placeholders(v) for v in value)
    return 0
