"""The errors domain-mlflow raises: one base class, one child per kind of mistake."""

from __future__ import annotations


class DomainMlflowError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DomainMlflowError):
    """An environment variable, argument or tag has a value we cannot use."""


class InvalidDomainIdError(ConfigError):
    """A domain id that would be unsafe as a file name, tag or registry name."""


class DataError(DomainMlflowError):
    """A training data file that cannot be used.

    ``path`` is the file; ``location`` is ``"line N"`` (JSONL) or ``"index N"``
    (JSON array) when the problem is in one record.
    """

    def __init__(self, path: str, problem: str, location: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.location = location
        where = f"{path}, {location}" if location else path
        super().__init__(f"{where}: {problem}")


class DataFileNotFoundError(DataError):
    """The data file does not exist or cannot be opened."""


class DataNotAFileError(DataFileNotFoundError):
    """The data path exists but is a directory, a device, a FIFO or a socket."""


class DataEncodingError(DataError):
    """The data file is not valid UTF-8."""


class EmptyDataError(DataError):
    """The data file holds no records at all."""


class DataTooLargeError(DataError):
    """The data file is larger than the configured limit."""


class MalformedJSONError(DataError):
    """A line (JSONL) or the whole file (JSON array) is not valid JSON."""


class RecordFormatError(DataError):
    """A record is not an object, or lacks the fields of every supported format."""


class NoUsableRecordsError(DataError):
    """Nothing is left to train on after filtering by domain and removing duplicates."""


class BaseModelError(DomainMlflowError):
    """The base model cannot be found, loaded or adapted."""


class TrainingDivergedError(DomainMlflowError):
    """The loss became NaN or infinite; the run is failed and nothing is registered."""


class TrainingInterrupted(DomainMlflowError):
    """SIGTERM or SIGINT stopped training; the MLflow run is ended as KILLED.

    ``signal_number`` is the signal; ``exit_code`` is 128 plus it, the shell's convention.
    """

    def __init__(self, signal_number: int, signal_name: str) -> None:
        self.signal_number = signal_number
        self.signal_name = signal_name
        self.exit_code = 128 + signal_number
        super().__init__(
            f"training stopped by {signal_name}; nothing was registered. Run again with "
            "resume=true to continue from the last checkpoint"
        )


class TrainingTimeLimitReached(DomainMlflowError):
    """``max_minutes`` ran out: training stopped at a step boundary with a checkpoint;
    the MLflow run is ended as KILLED and nothing is registered."""


class CheckpointError(DomainMlflowError):
    """A checkpoint to resume from is missing or does not match the run."""


class RegistryError(DomainMlflowError):
    """The MLflow Model Registry refused an operation or holds unexpected data."""


class ConfigStoreError(DomainMlflowError):
    """The config store (Postgres or the embedded SQLite file) is unreachable or refused."""


class SinkError(DomainMlflowError):
    """A serving target (Redis, LocalAI) failed; the promotion stays pending and is retried.

    ``status`` is the HTTP status the target answered, or None when there was no
    answer (connection refused, timeout) or the target does not speak HTTP.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PromotionError(DomainMlflowError):
    """A promotion, rollback or manual operation cannot be done as asked."""


class UnknownVersionError(PromotionError):
    """The registry has no such domain or model version."""
