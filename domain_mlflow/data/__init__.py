"""Training data: formats, loading, validation and the train/validation split."""

from domain_mlflow.data.loader import LoadedData, digest_examples, load_training_data
from domain_mlflow.data.records import FORMATS, Example
from domain_mlflow.data.split import split_examples

__all__ = [
    "FORMATS",
    "Example",
    "LoadedData",
    "digest_examples",
    "load_training_data",
    "split_examples",
]
