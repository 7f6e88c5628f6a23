"""bridge: knowledge-enhanced pre-training of transformers with kgengine vectors (see the bridge issue).

* :class:`KGVectors` / :func:`load_kg_vectors`: entity names + vectors from a kgengine model folder
  or its exports (.npy, TSV, word2vec, safetensors);
* :class:`EntityProjector` / :func:`anchor_pairs`: KG space -> the LM's input-embedding space,
  ridge-initialised on single-wordpiece anchors and scaled to the word embeddings' norms;
* :class:`KGBridge`: an HF BERT-family model reading projected KG vectors at entity slots
  (``inputs_embeds``; the KG table stays outside the model); :func:`add_entity_tokens`: the same
  vectors as new vocabulary rows; :class:`EntityMLMCollator`: MLM batches that never mask entity slots.
"""
from .inject import EntityMLMCollator, KGBridge, add_entity_tokens
from .project import EntityProjector, anchor_pairs
from .vectors import KGVectors, load_kg_vectors

__all__ = ["KGVectors", "load_kg_vectors", "EntityProjector", "anchor_pairs", "KGBridge", "add_entity_tokens",
           "EntityMLMCollator"]
