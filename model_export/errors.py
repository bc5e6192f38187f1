"""The root of model_export's exceptions: catch ``ModelExportError`` for any failure of training,
reading inputs, offline evaluation or the bundle lifecycle.

    TailorError                         (sdk)
    └── ModelExportError                model_export cannot go on
        ├── TrainingDataError           the training data cannot train a bundle
        ├── IngestError                 an input as a whole cannot be read (inputs.ingest)
        │   └── ColumnError             a configured column is in none of the files
        ├── EvaluationError             offline evaluation cannot go on (offline.evaluate)
        │   ├── LogReadError            the log path does not exist or holds no ``*.jsonl``
        │   └── NoUsableRows            no logged choice can be evaluated
        ├── LifecycleError              the bundle lifecycle refuses (bundle.lifecycle)
        │   ├── BundleRefused           a bundle fails verification
        │   ├── RegressionRefused       a required metric got worse
        │   ├── RequirementError        a requirement expression is malformed (also ValueError)
        │   ├── CurrentBundleError      the current bundle's manifest cannot be read
        │   ├── LiveLinkError           ``live`` is not a symlink, or no ``live.previous``
        │   └── SampleError             a sample file of decide requests cannot be read
        └── SigningError                a signing key cannot be read or written (bundle.signing)

Must not import server.
"""

from __future__ import annotations

from sdk import TailorError

__all__ = ["ModelExportError", "TrainingDataError"]


class ModelExportError(TailorError):
    """Base class of the errors raised by model_export."""


class TrainingDataError(ModelExportError):
    """The training data cannot train a bundle (no valid transactions, too few customers)."""
