"""Normalisers and the per-domain hook used by the accuracy metric."""

from __future__ import annotations

import pytest

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.training.evaluation import (
    normalize_sql,
    normalize_text,
    register_normalizer,
    resolve_normalizer,
)


def test_the_default_normaliser_ignores_case_and_spacing():
    assert normalize_text("  SELECT  *\nFROM t ") == normalize_text("select * from t")
    assert normalize_text("a b") != normalize_text("ab")


def test_the_sql_normaliser_ignores_trailing_semicolons_and_bracket_spacing():
    spaced = normalize_sql("SELECT COUNT( * ) , a FROM t;")
    assert spaced == normalize_sql("select count(*), a from t")
    assert normalize_sql("SELECT a FROM t") != normalize_sql("SELECT b FROM t")


def test_normalisers_resolve_by_name_by_import_path_and_by_domain():
    assert resolve_normalizer("sql", "d") is normalize_sql
    assert resolve_normalizer("domain_mlflow.training.evaluation:normalize_sql", "d") is \
        normalize_sql
    assert resolve_normalizer(None, "unregistered-domain") is normalize_text

    def shout(text: str) -> str:
        return text.upper()

    register_normalizer("loud-domain", shout)
    assert resolve_normalizer(None, "loud-domain") is shout


@pytest.mark.parametrize("spec", ["nope", "os.path:nothing_here", "no_such_module:f", "math:pi"])
def test_an_unknown_normaliser_is_a_config_error(spec):
    with pytest.raises(ConfigError, match="normalizer"):
        resolve_normalizer(spec, "d")
