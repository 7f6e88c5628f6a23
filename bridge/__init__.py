"""bridge: knowledge-enhanced pre-training of transformers with kgengine vectors (see the bridge issue)."""
