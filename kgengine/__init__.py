"""kgengine: knowledge-graph embeddings on DGL graphs, with shared negative sampling and row-sparse updates."""
from . import threads  # noqa: F401  (first: sets OMP_WAIT_POLICY before anything loads torch)
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
