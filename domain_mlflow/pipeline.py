"""``TrainingPipeline``: JSON tables → domains → privacy → per-domain data → training → deployment.

Each step's outcome is in ``results["steps"][name]`` with a ``status`` of
``success``, ``skipped`` (with ``reason``) or ``failed`` (with ``error``); a failed
step skips the ones after it. Everything runs inside one MLflow parent run; each
domain's training is a child run of it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from domain_mlflow.data.privacy import RedactionReport, Redactor, check_privacy_level
from domain_mlflow.data.tables import DomainTables, group_by_domain, write_jsonl
from domain_mlflow.exceptions import ConfigError, DomainMlflowError, TrainingInterrupted
from domain_mlflow.naming import utc_now, validate_domain_id
from domain_mlflow.settings import Settings, load_settings

_log = logging.getLogger(__name__)

STEPS = ("load", "domain_filtering", "privacy", "domain_data", "domain_training", "deployment")
DEFAULT_MIN_RECORDS = 10


def _skipped(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, **extra}


class TrainingPipeline:
    """The seed's pipeline over this project's trainer and promotion.

    ``privacy_level``: ``low`` keeps text as it is, ``medium`` redacts e-mail
    addresses, phone numbers, IP addresses, card numbers and secrets, ``high`` also
    drops records that still look personal. Domains with fewer than ``min_records``
    records are not trained. ``training_options`` are passed to every
    :meth:`DomainTrainer.train_domain_model` call (e.g. ``{"max_steps": 200}``).
    """

    def __init__(self, enable_domain_filtering: bool = True, privacy_level: str = "medium", *,
                 data_dir: str | os.PathLike[str] | None = None,
                 min_records: int = DEFAULT_MIN_RECORDS,
                 training_options: dict[str, Any] | None = None,
                 experiment_name: str | None = None,
                 settings: Settings | None = None) -> None:
        check_privacy_level(privacy_level)
        if not isinstance(min_records, int) or min_records < 2:
            raise ConfigError(f"min_records must be a whole number of at least 2, "
                              f"got {min_records!r}")
        self.enable_domain_filtering = enable_domain_filtering
        self.privacy_level = privacy_level
        self.data_dir = data_dir
        self.min_records = min_records
        self.training_options = dict(training_options or {})
        self.experiment_name = experiment_name
        # Read when the pipeline runs: the seed sets ENABLE_DOMAIN_TRAINING afterwards.
        self._settings = settings

    def run_full_pipeline(self, project_id: str, json_tables: list[str | os.PathLike[str]],
                          domain_ids: list[str] | None = None) -> dict[str, Any]:
        """Run every step over ``json_tables`` and return the results (never raises for a
        step's failure; a bad argument raises :class:`ConfigError`)."""
        import mlflow

        validate_domain_id(project_id)
        if isinstance(json_tables, (str, os.PathLike)) or not json_tables:
            raise ConfigError("json_tables must be a non-empty list of file paths")
        settings = self._settings or load_settings()
        data_dir = Path(self.data_dir or settings.pipeline_data_dir).resolve() / project_id
        run = _PipelineRun(self, settings, project_id, [os.fspath(p) for p in json_tables],
                           data_dir, domain_ids)
        if self.experiment_name:
            mlflow.set_experiment(self.experiment_name)
        started = utc_now().strftime("%Y%m%d_%H%M%S")
        with mlflow.start_run(run_name=f"pipeline_{project_id}_{started}",
                              nested=mlflow.active_run() is not None) as parent:
            mlflow.set_tags({"pipeline.project_id": project_id, "pipeline": "true"})
            mlflow.log_params({"project_id": project_id, "privacy_level": self.privacy_level,
                               "enable_domain_filtering": str(self.enable_domain_filtering),
                               "json_tables": ",".join(run.tables)[:6000],
                               "min_records": self.min_records})
            results = run.execute()
            results["mlflow_run_id"] = parent.info.run_id
            mlflow.log_metrics(run.metrics)
            mlflow.log_dict(results, "pipeline_results.json")
            mlflow.set_tag("pipeline.status", results["status"])
        return results


class _PipelineRun:
    """The state of one ``run_full_pipeline`` call, step by step."""

    def __init__(self, pipeline: TrainingPipeline, settings: Settings, project_id: str,
                 tables: list[str], data_dir: Path, domain_ids: list[str] | None) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.project_id = project_id
        self.tables = tables
        self.data_dir = data_dir
        self.only = set(domain_ids) if domain_ids else None
        self.metrics: dict[str, float] = {}
        self.grouped = DomainTables()
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, Path] = {}
        self.trained: dict[str, dict[str, Any]] = {}

    def execute(self) -> dict[str, Any]:
        steps: dict[str, dict[str, Any]] = {}
        failed: str | None = None
        for name in STEPS:
            if failed:
                steps[name] = _skipped(f"step {failed!r} failed")
                continue
            try:
                steps[name] = getattr(self, f"_{name}")()
            except TrainingInterrupted:
                raise  # a signal stops the whole pipeline, not one step of it
            except DomainMlflowError as error:
                _log.error("pipeline step %s failed: %s", name, error)
                steps[name] = {"status": "failed", "error": str(error)}
            if steps[name]["status"] == "failed":
                failed = name
        return {
            "project_id": self.project_id,
            "status": "failed" if failed else "success",
            "privacy_level": self.pipeline.privacy_level,
            "data_dir": str(self.data_dir),
            "steps": steps,
        }

    def _load(self) -> dict[str, Any]:
        single = None if self.pipeline.enable_domain_filtering else self.project_id
        self.grouped = group_by_domain(self.tables, single_domain=single)
        self.metrics.update({"records_total": self.grouped.total,
                             "records_unusable": self.grouped.unusable})
        return {"status": "success", "tables": self.tables, "records": self.grouped.total,
                "unusable": self.grouped.unusable, "problems": self.grouped.problems}

    def _domain_filtering(self) -> dict[str, Any]:
        grouped = self.grouped.records
        if self.only:
            grouped = {d: rows for d, rows in grouped.items() if d in self.only}
        self.records = grouped
        self.metrics.update({"records_unassigned": self.grouped.unassigned,
                             "domains": len(grouped)})
        counts = {domain_id: len(rows) for domain_id, rows in grouped.items()}
        if not self.pipeline.enable_domain_filtering:
            return _skipped(f"domain filtering is off: every record trains domain "
                            f"{self.project_id!r}", domains=counts)
        if not grouped:
            return {"status": "failed", "error": "no record with a usable domain_id"
                    + (f" among {sorted(self.only)}" if self.only else "")
                    + f" in {len(self.tables)} table(s)", "domains": {}}
        return {"status": "success", "domains": counts, "unassigned": self.grouped.unassigned}

    def _privacy(self) -> dict[str, Any]:
        level = self.pipeline.privacy_level
        redactor = Redactor(level)
        report = RedactionReport()
        kept: dict[str, list[dict[str, Any]]] = {}
        for domain_id, rows in self.records.items():
            kept[domain_id] = []
            for row in rows:
                clean, counts = redactor.redact_record(row)
                report.add(counts)
                if clean is not None:
                    kept[domain_id].append(clean)
        self.records = kept
        self.metrics.update(report.as_dict())
        redacted = {kind: n for kind, n in sorted(report.counts.items()) if n}
        _log.info("privacy %s: redacted %s, dropped %d record(s)", level, redacted or "nothing",
                  report.records_dropped)
        if level == "low":
            return _skipped("privacy_level is low: text kept as it is", level=level,
                            redacted={}, dropped=0)
        return {"status": "success", "level": level, "redacted": redacted,
                "dropped": report.records_dropped}

    def _domain_data(self) -> dict[str, Any]:
        folder = self.data_dir / "domain_filtered"
        for domain_id, rows in self.records.items():
            if rows:
                self.files[domain_id] = write_jsonl(folder / f"{domain_id}.jsonl", rows)
        return {"status": "success", "folder": str(folder),
                "files": {d: str(p) for d, p in self.files.items()},
                "records": {d: len(rows) for d, rows in self.records.items()}}

    def _domain_training(self) -> dict[str, Any]:
        if not self.settings.enable_domain_training:
            return _skipped("ENABLE_DOMAIN_TRAINING is not true", should_deploy=False,
                            deployment=None, domains={})
        from domain_mlflow.workflow import DomainTrainer

        domains: dict[str, dict[str, Any]] = {}
        with DomainTrainer(settings=self.settings) as trainer:
            for domain_id, path in self.files.items():
                domains[domain_id] = self._train(trainer, domain_id, path)
        return self._training_summary(domains)

    def _train(self, trainer: Any, domain_id: str, path: Path) -> dict[str, Any]:
        size = len(self.records[domain_id])
        if size < self.pipeline.min_records:
            return _skipped(f"{size} record(s), fewer than min_records={self.pipeline.min_records}")
        try:
            result = trainer.train_domain_model(domain_id, path, fine_tune=True,
                                                **self.pipeline.training_options)
        except TrainingInterrupted:
            raise  # the other domains are not trained either
        except DomainMlflowError as error:
            _log.error("training %s failed: %s", domain_id, error)
            return {"status": "failed", "error": str(error)}
        self.trained[domain_id] = result
        return {"status": "success", **result}

    def _training_summary(self, domains: dict[str, dict[str, Any]]) -> dict[str, Any]:
        self.metrics["domains_trained"] = len(self.trained)
        failed = sorted(d for d, r in domains.items() if r["status"] == "failed")
        # The seed reads should_deploy and deployment off the step itself: they
        # describe the first domain that passed the gate, else the first one trained.
        passing = [r for r in self.trained.values() if r["should_deploy"]]
        lead = (passing or list(self.trained.values()) or [None])[0]
        summary: dict[str, Any] = {
            "domains": domains,
            "should_deploy": bool(lead and lead["should_deploy"]),
            "deployment": lead["deployment"] if lead else None,
            "training_run_id": lead["training_run_id"] if lead else None,
        }
        if failed:
            return {"status": "failed", "error": f"training failed for {', '.join(failed)}",
                    **summary}
        if not self.trained:
            return {**_skipped("no domain has enough records to train"), **summary}
        return {"status": "success", **summary}

    def _deployment(self) -> dict[str, Any]:
        if not self.trained:
            return _skipped("nothing was trained")
        deployed, rejected, pending = {}, {}, {}
        for domain_id, result in self.trained.items():
            deployment = result.get("deployment") or {}
            if deployment.get("deployed"):
                deployed[domain_id] = deployment.get("model_version")
            elif not result["should_deploy"]:
                rejected[domain_id] = "; ".join(result["gate"]["reasons"])
            else:
                pending[domain_id] = deployment.get("reason", "not deployed")
        self.metrics["domains_deployed"] = len(deployed)
        outcome = {"deployed": deployed, "rejected": rejected, "pending": pending}
        if pending:
            return {"status": "failed", "error": "promotion pending for "
                    + ", ".join(f"{d} ({why})" for d, why in sorted(pending.items())), **outcome}
        return {"status": "success", **outcome}
