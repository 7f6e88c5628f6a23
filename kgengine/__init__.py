"""kgengine: knowledge-graph embeddings on DGL graphs, with shared negative sampling and row-sparse updates."""
import os as _os

# OpenMP's default lets idle threads spin; on a shared or busy machine each small op then waits for a
# descheduled partner (measured 30x slower steps at 2 threads, benchmarks/README.md). Passive waiting
# costs little when the machine is idle. Only takes effect if torch was not imported yet; users may
# override it by setting the variable themselves.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .data import BUILTIN_DATASETS, KG, DataError, load_dataset
from .evaluate import evaluate
from .models import MODEL_REGISTRY, KGEModel, create_model, model_names
from .saved import TrainedKGE
from .train import TrainConfig, Trainer, train

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_DATASETS", "KG", "DataError", "load_dataset", "evaluate", "MODEL_REGISTRY", "KGEModel",
    "create_model", "model_names", "TrainedKGE", "TrainConfig", "Trainer", "train", "__version__",
]
