"""The gate: thresholds, missing and NaN metrics, the champion rule, per-domain overrides."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from domain_mlflow.exceptions import ConfigError
from domain_mlflow.gate import GATED_METRICS, GateDecision, Thresholds, decide
from domain_mlflow.registry import domain_thresholds, ensure_registered_model
from domain_mlflow.settings import load_settings

GOOD = {"accuracy": 0.9, "latency_ms": 120.0, "training_loss": 0.02, "validation_loss": 0.03}


def test_metrics_within_every_threshold_pass():
    decision = decide(GOOD, Thresholds())
    assert decision.passed
    assert decision.status == "passed"
    assert decision.reasons == ()
    assert decision.summary() == "all thresholds met"


def test_every_failing_metric_gives_its_own_reason():
    bad = {"accuracy": 0.5, "latency_ms": 900.0, "training_loss": 0.4, "validation_loss": 0.5}
    decision = decide(bad, Thresholds())
    assert not decision.passed
    assert decision.reasons == (
        "accuracy 0.5 < minimum 0.85",
        "latency_ms 900 > maximum 500",
        "training_loss 0.4 > maximum 0.3",
        "validation_loss 0.5 > maximum 0.35",
    )


def test_values_on_the_threshold_pass():
    limits = Thresholds()
    assert decide(limits.as_dict(), limits).passed


@pytest.mark.parametrize("bad", [None, math.nan, math.inf, -math.inf, "n/a"])
def test_a_missing_or_non_finite_metric_fails(bad):
    metrics = {**GOOD, "validation_loss": bad}
    if bad is None:
        metrics.pop("validation_loss")
    decision = decide(metrics, Thresholds())
    assert not decision.passed
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("validation_loss is")


def test_the_seed_example_without_losses_fails_with_reasons():
    decision = decide({"accuracy": 0.9, "latency_ms": 100}, Thresholds())
    assert decision.reasons == ("training_loss is missing", "validation_loss is missing")


def test_a_challenger_less_accurate_than_production_fails():
    decision = decide(GOOD, Thresholds(), champion={"accuracy": 0.95})
    assert not decision.passed
    assert decision.reasons == ("accuracy 0.9 < production's 0.95",)
    assert decide(GOOD, Thresholds(), champion={"accuracy": 0.9}).passed


def test_thresholds_come_from_the_environment():
    settings = load_settings({
        "DEPLOY_ACCURACY_THRESHOLD": "0.5",
        "DEPLOY_LATENCY_THRESHOLD": "50",
        "DEPLOY_LOSS_THRESHOLD": "1",
        "DEPLOY_VAL_LOSS_THRESHOLD": "2",
    })
    assert settings.thresholds == Thresholds(0.5, 50.0, 1.0, 2.0)
    decision = decide(GOOD, settings.thresholds)
    assert decision.reasons == ("latency_ms 120 > maximum 50",)


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEPLOY_ACCURACY_THRESHOLD", "high"), ("DEPLOY_ACCURACY_THRESHOLD", "1.5"),
     ("DEPLOY_LATENCY_THRESHOLD", "-1"), ("DEPLOY_LOSS_THRESHOLD", "nan"),
     ("DEPLOY_VAL_LOSS_THRESHOLD", "inf")],
)
def test_a_bad_threshold_variable_is_an_error_naming_it(name, value):
    with pytest.raises(ConfigError, match=f"^{name}="):
        load_settings({name: value})


def test_registered_model_tags_override_thresholds_per_domain():
    client = MlflowClient()
    name = ensure_registered_model(client, "strict-domain")
    client.set_registered_model_tag(name, "threshold.accuracy", "0.99")
    client.set_registered_model_tag(name, "threshold.latency_ms", "80")
    thresholds = domain_thresholds(client, "strict-domain", Thresholds())
    assert thresholds == Thresholds(accuracy=0.99, latency_ms=80.0)
    assert domain_thresholds(client, "other-domain", Thresholds()) == Thresholds()
    assert not decide(GOOD, thresholds).passed


@pytest.mark.parametrize(("tag", "value"), [("threshold.accuracy", "most"),
                                            ("threshold.speed", "1")])
def test_a_bad_threshold_tag_is_an_error_naming_it(tag, value):
    client = MlflowClient()
    name = ensure_registered_model(client, "d")
    client.set_registered_model_tag(name, tag, value)
    with pytest.raises(ConfigError, match=tag.replace(".", r"\.")):
        domain_thresholds(client, "d", Thresholds())


_metric_values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


@given(values=st.fixed_dictionaries({name: _metric_values for name in GATED_METRICS}))
def test_the_gate_passes_exactly_when_every_metric_is_finite_and_within(values):
    metrics = {k: v for k, v in values.items() if v is not None}
    limits = Thresholds().as_dict()

    def within(name):
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            return False
        return value >= limits[name] if GATED_METRICS[name] == "min" else value <= limits[name]

    decision = decide(metrics, Thresholds())
    assert decision.passed == all(within(name) for name in GATED_METRICS)
    assert len(decision.reasons) == sum(not within(name) for name in GATED_METRICS)


def test_a_decision_written_as_a_dict_reads_back_the_same():
    from dataclasses import fields

    limits = Thresholds(accuracy=0.5, latency_ms=80.0, training_loss=0.2, validation_loss=0.3)
    decision = decide({"accuracy": 0.6, "latency_ms": 90.0, "training_loss": 0.25},
                      limits, champion={"accuracy": 0.7})
    written = decision.to_dict()
    assert set(written["thresholds"]) == {field.name for field in fields(Thresholds)}
    assert written["checks"][0] == {"metric": "accuracy", "value": 0.6, "threshold": 0.5,
                                    "passed": True, "reason": "accuracy 0.6 >= minimum 0.5"}
    assert GateDecision.from_dict(written) == decision
