"""bridge: knowledge-enhanced pre-training of transformers with kgengine vectors (see the bridge issue).

* :class:`KGVectors` / :func:`load_kg_vectors`: entity names + vectors from a kgengine model folder
  or its exports (.npy, TSV, word2vec, safetensors);
* :class:`EntityProjector` / :func:`anchor_pairs`: KG space -> the LM's input-embedding space,
  ridge-initialised on single-wordpiece anchors and scaled to the word embeddings' norms;
* :class:`KGBridge`: an HF BERT-family model reading projected KG vectors at entity slots
  (``inputs_embeds``; the KG table stays outside the model); :func:`add_entity_tokens`: the same
  vectors as new vocabulary rows; :class:`EntityMLMCollator`: MLM batches that never mask entity slots.
"""
import kgengine as _kgengine  # noqa: F401  (first: its OpenMP wait-policy default must precede torch's import)

from .inject import EntityMLMCollator, KGBridge, add_entity_tokens
from .project import EntityProjector, anchor_pairs
from .vectors import KGVectors, load_kg_vectors

__all__ = ["KGVectors", "load_kg_vectors", "EntityProjector", "anchor_pairs", "KGBridge", "add_entity_tokens",
           "EntityMLMCollator"]

# Knowledge-enhanced pre-training (bridge.pretrain): KEPOutput and KEPTrainer import transformers'
# Trainer, so they are resolved on first use (module __getattr__ below), not with the package.
from .pretrain import (DistillKEP, InjectKEP, KEPCollator, KEPConfig, KEPModel, MultitaskKEP,  # noqa: E402
                       PretrainResult, add_slot_token, build_kep_model, feature_kd_loss, kge_logsigmoid_loss,
                       load_lm_with_mlm_head, logit_kd_loss, plot_loss_curve, pool_mentions, run_pretraining,
                       tokenize_records, warmup_mlm_head)

__all__ += ["KEPConfig", "KEPModel", "InjectKEP", "DistillKEP", "MultitaskKEP", "build_kep_model", "KEPCollator",
            "KEPOutput", "KEPTrainer", "PretrainResult", "tokenize_records", "add_slot_token", "load_lm_with_mlm_head",
            "warmup_mlm_head", "run_pretraining", "pool_mentions", "feature_kd_loss", "logit_kd_loss",
            "kge_logsigmoid_loss", "plot_loss_curve"]


def __getattr__(name: str):
    if name in ("KEPOutput", "KEPTrainer"):
        from . import pretrain

        return getattr(pretrain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Probes (bridge.probe) and the `kge bridge` commands (bridge.cli).
from .probe import (accuracy_macro_f1, fit_logistic_regression, format_probe_table, linkpred_probe,  # noqa: E402
                    mention_features, random_like, typing_probe)

__all__ += ["typing_probe", "linkpred_probe", "mention_features", "fit_logistic_regression", "accuracy_macro_f1",
            "random_like", "format_probe_table", "add_bridge_commands"]

_getattr_before_cli = __getattr__


def __getattr__(name: str):  # noqa: F811 -- bridge.cli on first use (so `python -m bridge.cli` imports it once)
    if name == "add_bridge_commands":
        from .cli import add_bridge_commands

        return add_bridge_commands
    return _getattr_before_cli(name)
