"""The ``kge`` command: train, eval, predict, similar, export.

DGL-KE's flag names (``--model_name``, ``--hidden_dim``, ``--save_path``,
``--data_path``, ``--max_step``, ``--neg_sample_size``, ``-adv``, ...) work
unchanged beside the dashed short forms (``--model``, ``--dim``, ``--save-path``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path

from .data import BUILTIN_DATASETS, DataError, UNSEEN_POLICIES, load_dataset
from .errors import DeviceError, KGEError
from .memory import format_plan, plan_for
from .evaluate import TIE_MODES
from .export import EXPORT_FORMATS
from .models import model_names
from .train import LOSS_GENRES, TrainConfig

__all__ = ["main", "build_parser"]


def _add_data_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help=f"built-in dataset ({', '.join(BUILTIN_DATASETS)}) or the name of a "
                                     "folder under --data_path")
    g.add_argument("--data-path", "--data_path", dest="data_path",
                   help="folder with train/valid/test.txt (head<TAB>rel<TAB>tail)")
    g.add_argument("--format", default="raw_udd_hrt", help="raw_udd_{hrt} (names) or udd_{hrt} (ids + .dict files), "
                                                           "columns in any order (default raw_udd_hrt)")
    g.add_argument("--data-files", "--data_files", dest="data_files", nargs="+",
                   help="file names in data_path: train valid test (udd: entities.dict relations.dict first)")
    g.add_argument("--delimiter", default="\t", help="field separator (default TAB)")
    g.add_argument("--unseen", choices=UNSEEN_POLICIES, default="keep",
                   help="valid/test entities never seen in train: keep (default), drop their triples, or error")
    g.add_argument("--header", action="store_true", help="the first line of every triple file is a header: skip it")
    g.add_argument("--no-cache", dest="cache", action="store_false",
                   help="parse the text files even if a binary cache of them exists (and write none)")
    p.set_defaults(_data_required=required)


def _load(args: argparse.Namespace):
    if not args.dataset and not args.data_path:
        raise DataError("give --dataset (built-in: " + ", ".join(BUILTIN_DATASETS) + ") or --data-path")
    return load_dataset(args.dataset, args.data_path, args.format, args.data_files, args.delimiter, args.unseen,
                        header=args.header, cache=args.cache)


def _add_train(sub) -> None:
    d = argparse.SUPPRESS  # unset flags fall back to kgengine.presets, then TrainConfig
    p = sub.add_parser("train", help="train a model", description="Train a KGE model; writes the saved-model folder, "
                       "metrics.json (valid and test, filtered) and train_log.jsonl into --save-path.")
    _add_data_args(p, True)
    g = p.add_argument_group("model")
    g.add_argument("--model", "--model_name", "--model-name", dest="model_name", default=d,
                   help=f"one of {', '.join(model_names())} (default TransE_l2)")
    g.add_argument("--dim", "--hidden_dim", "--hidden-dim", dest="hidden_dim", type=int, default=d,
                   help="embedding dimension; complex dimension for ComplEx/RotatE")
    g.add_argument("-g", "--gamma", type=float, default=d, help="margin of distance models; sets the init "
                   "range (gamma+2)/dim for all")
    g.add_argument("-de", "--double_ent", action="store_true", help="accepted for DGL-KE compatibility; ComplEx and "
                   "RotatE always store 2*dim reals per entity")
    g.add_argument("-dr", "--double_rel", action="store_true", help="accepted for DGL-KE compatibility (no effect)")
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=d, help="Adagrad learning rate")
    g.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=d)
    g.add_argument("-n", "--neg-sample-size", "--neg_sample_size", dest="neg_sample_size", type=int,
                   default=d, help="negatives shared by each chunk")
    g.add_argument("--neg-chunk-size", "--neg_chunk_size", dest="neg_chunk_size", type=int, default=d,
                   help="positives per chunk sharing negatives; must divide the batch (default: neg_sample_size)")
    g.add_argument("--neg-deg-sample", "--neg_deg_sample", dest="neg_deg_sample", action="store_const",
                   const=True, default=d,
                   help="draw negatives proportional to entity degree in train (from the DGL graph)")
    g.add_argument("-adv", "--neg_adversarial_sampling", "--adv", dest="neg_adversarial_sampling",
                   action="store_const", const=True, default=d, help="self-adversarial weighting of negatives")
    g.add_argument("-a", "--adversarial_temperature", "--adversarial-temperature", dest="adversarial_temperature",
                   type=float, default=d)
    g.add_argument("-rc", "--regularization_coef", "--regularization-coef", dest="regularization_coef", type=float,
                   default=d)
    g.add_argument("-rn", "--regularization_norm", "--regularization-norm", dest="regularization_norm", type=int,
                   default=d)
    g.add_argument("--loss-genre", "--loss_genre", dest="loss_genre", choices=LOSS_GENRES, default=d,
                   help="Logsigmoid (default; DGL-KE's) or Softmax: cross-entropy of each positive against its "
                   "shared negatives (-adv has no effect with it)")
    g.add_argument("--optimizer-state", "--optimizer_state", dest="optimizer_state", choices=("element", "row"),
                   default=d, help="Adagrad accumulators: one per weight (default) or one per row (PyTorch-BigGraph's "
                   "and DGL-KE's row-wise Adagrad: half the memory of the tables plus state)")
    g.add_argument("--reciprocal", dest="reciprocal", action="store_const", const=True, default=d,
                   help="a second relation row for each inverse relation: train (t, r_inv, h) beside every "
                   "(h, r, t) and answer (?, r, t) as (t, r_inv, ?)")
    g.add_argument("--max-step", "--max_step", dest="max_step", type=int, default=d)
    g.add_argument("--seed", type=int, default=d)
    g = p.add_argument_group("devices and processes")
    g.add_argument("--device", default=d, help="cpu (default) or cuda[:N]")
    g.add_argument("--gpu", type=int, nargs="+", default=d,
                   help="DGL-KE style: --gpu 0 means --device cuda:0; --gpu 0 1 runs one worker process per GPU "
                   "on tables in shared CPU memory; -1: the CPU")
    g.add_argument("--num-proc", "--num_proc", dest="num_proc", type=int, default=d,
                   help="worker processes training one model on shared tables (Hogwild); --max_step counts the "
                   "steps of all workers together (default 1; with several --gpu, one per GPU)")
    g.add_argument("--partition", dest="partition", default=d,
                   help="a partition written by kge partition (its .npy): worker i trains the triples whose head is "
                   "in part i and draws negatives from part i (DGL-KE's locality); needs --num_proc = its parts")
    g.add_argument("--rel-part", "--rel_part", dest="rel_part", action="store_const", const=True, default=d,
                   help="with --num_proc: give each worker the triples of its own relations (DGL-KE's relation "
                   "partition), so no two workers write the same relation row")
    g.add_argument("--num-thread", "--num_thread", dest="num_thread", type=int, default=d,
                   help="torch CPU threads per process (0: torch's default; workers: cores / num_proc)")
    g.add_argument("--mix-cpu-gpu", "--mix_cpu_gpu", dest="mix_cpu_gpu", action="store_const", const=True,
                   default=d, help="keep the tables and optimizer state in CPU memory and move only each step's "
                   "rows to the GPU (tables larger than the GPU)")
    g.add_argument("--async-update", "--async_update", dest="async_update", action="store_const", const=True,
                   default=d, help="with --mix_cpu_gpu: apply each step's update on the CPU in a background "
                   "thread while the GPU computes the next step (rows may be a step or two stale)")
    g.add_argument("--amp", dest="amp", action="store_const", const=True, default=d,
                   help="score in bfloat16 (autocast); tables and optimizer state stay float32")
    g.add_argument("--compile", dest="compile", action="store_const", const=True, default=d,
                   help="torch.compile the scoring and loss of a step (falls back to eager if compiling fails)")
    g = p.add_argument_group("validation, checkpoints, output")
    g.add_argument("--save-path", "--save_path", dest="save_path", required=True, help="output folder")
    g.add_argument("--log-interval", "--log_interval", dest="log_interval", type=int, default=d)
    g.add_argument("--eval-interval", "--eval_interval", "--valid-interval", dest="eval_interval", type=int,
                   default=d, help="validate (filtered MRR) every N steps; 0 = only at the end")
    g.add_argument("--early-stop-patience", "--early_stop_patience", dest="early_stop_patience", type=int,
                   default=d, help="stop after N validations without a better valid MRR (0: never)")
    g.add_argument("--checkpoint-interval", "--checkpoint_interval", dest="checkpoint_interval", type=int,
                   default=d, help="write a checkpoint every N steps into SAVE_PATH/checkpoints")
    g.add_argument("--resume", action="store_true", help="continue from the newest readable checkpoint in "
                   "--save-path (the same run: its training settings must match)")
    g.add_argument("--overwrite", action="store_true", help="train into a --save-path that holds another run: its "
                   "files are moved to SAVE_PATH.replaced-<time> first (without this flag such a folder is refused)")
    g.add_argument("--ties", dest="eval_ties", choices=TIE_MODES, default=d, help="rank ties (default realistic)")
    g.add_argument("--no-eval-filter", "--no_eval_filter", dest="eval_filter", action="store_const", const=False,
                   default=d, help="raw ranking in validation and the final evaluation (default: filtered)")
    g.add_argument("--eval-percent", "--eval_percent", dest="eval_percent", type=float, default=d,
                   help="rank a seeded random PERCENT of valid/test (default 100)")
    g.add_argument("--batch-size-eval", "--batch_size_eval", dest="batch_size_eval", type=int, default=d,
                   help="queries per evaluation batch (default: sized by a 256 MiB budget)")
    g.add_argument("--neg-sample-size-eval", "--neg_sample_size_eval", dest="neg_sample_size_eval", type=int,
                   default=d, help="rank against this many sampled entities (default -1: all entities; "
                   "sampled ranks are optimistic and not comparable with full ranking)")
    g.add_argument("--no-eval", "--no_eval", dest="no_eval", action="store_true",
                   help="skip the final valid/test evaluation")
    g.add_argument("--test", "--valid", dest="_dglke_eval", action="store_true",
                   help="accepted for DGL-KE compatibility; valid and test are evaluated unless --no-eval")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=d,
                   help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .presets import preset_config
    from .train import train

    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    model = explicit.pop("model_name", "TransE_l2")
    cfg = preset_config(model, args.dataset or (Path(args.data_path).name if args.data_path else None), **explicit)
    kg = _load(args)
    print(f"{kg}; {cfg.model_name} dim={cfg.hidden_dim} on {cfg.device}", file=sys.stderr)
    print(format_plan(plan_for(cfg, kg, args.save_path)), file=sys.stderr)
    # the metrics are printed before metrics.json is written: a full disk cannot lose them
    train(kg, cfg, args.save_path, resume=args.resume, overwrite=args.overwrite, evaluate_test=not args.no_eval,
          on_metrics=lambda m: print(_metrics_table(m), flush=True))
    print(f"saved to {args.save_path}", file=sys.stderr)
    return 0


def _metrics_table(metrics: dict) -> str:
    keys = ["mrr", "mr", "hits@1", "hits@3", "hits@10"]
    lines = ["split  " + "  ".join(f"{k:>8}" for k in keys)]
    for split, m in metrics.items():
        lines.append(f"{split:<6} " + "  ".join(f"{m[k]:>8.4f}" if k != "mr" else f"{m[k]:>8.2f}" for k in keys))
    return "\n".join(lines)


def _add_model_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-path", "--model_path", dest="model_path", required=True,
                   help="a folder written by kge train --save-path")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="filtered MRR, MR, Hits@1/3/10 of a saved model",
                       description="Filtered link-prediction ranking against all entities, head and tail side. "
                       "Without --dataset/--data-path it uses the triples stored with the model.")
    _add_model_path(p)
    _add_data_args(p, False)
    p.add_argument("--split", choices=["valid", "test", "both"], default="both")
    p.add_argument("--ties", choices=TIE_MODES, default="realistic")
    p.add_argument("--no-filter", dest="filtered", action="store_false", help="raw ranking")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--output", "-o", help="also write the metrics (JSON) to this file; the model folder's "
                   "metrics.json is never changed by kge eval")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .data import KG
    from .evaluate import evaluate
    from .persist import atomic_write_json
    from .saved import TrainedKGE

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"--device {args.device}: torch sees no CUDA device here")
    trained = TrainedKGE.from_pretrained(args.model_path, args.device)
    if args.dataset or args.data_path:
        kg = _load(args).remap(trained.entities, trained.relations)
    else:
        if not trained.triples:
            raise DataError(f"{args.model_path}: no stored triples; pass --dataset or --data-path")
        kg = KG(trained.entities, trained.relations, trained.triples["train"], trained.triples["valid"],
                trained.triples["test"], trained.dataset)
    splits = ["valid", "test"] if args.split == "both" else [args.split]
    out = {}
    for s in splits:
        if len(kg.split(s)) == 0:
            raise DataError(f"the {s} split is empty")
        m = evaluate(trained.model, kg.split(s), kg.known() if args.filtered else None, ties=args.ties)
        out[s] = {k: v for k, v in m.items() if not isinstance(v, dict)}
    print(json.dumps(out, indent=2) if args.json else _metrics_table(out), flush=True)  # before any write
    if args.output:
        atomic_write_json(args.output, out)
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-k answers of (h, r, ?), (?, r, t) or (h, ?, t)",
                       description="Give exactly two of --head, --rel, --tail (names).")
    _add_model_path(p)
    p.add_argument("--head")
    p.add_argument("--rel", "--relation", dest="rel")
    p.add_argument("--tail")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--exclude-known", "--exclude_known", dest="exclude_known", action="store_true",
                   help="leave out answers that form a triple stored with the model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)


def _print_ranked(rows: list[tuple[str, float]], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"name": n, "score": s} for n, s in rows], indent=2))
    else:
        for i, (n, s) in enumerate(rows, 1):
            print(f"{i:>3}  {s:>10.4f}  {n}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict
    from .saved import TrainedKGE

    trained = TrainedKGE.from_pretrained(args.model_path)
    _print_ranked(predict(trained, args.head, args.rel, args.tail, args.topk, args.exclude_known), args.json)
    return 0


def _add_similar(sub) -> None:
    from .predict import SIMILARITY_METRICS

    p = sub.add_parser("similar", help="nearest entities to an entity")
    _add_model_path(p)
    p.add_argument("--entity", required=True)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--metric", choices=SIMILARITY_METRICS, default="cosine")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_similar)


def _cmd_similar(args: argparse.Namespace) -> int:
    from .predict import similar
    from .saved import TrainedKGE

    trained = TrainedKGE.from_pretrained(args.model_path)
    _print_ranked(similar(trained, args.entity, args.topk, args.metric), args.json)
    return 0


def _add_partition(sub) -> None:
    from .partition import PARTITION_METHODS

    p = sub.add_parser("partition", help="split the entities into parts for worker processes (METIS through DGL)",
                       description="Compute the entity partition once (METIS differs run to run) and save it "
                       "(default: DATA_PATH/partitions/METHOD-P.npy/.json); train with --partition FILE --num_proc P.")
    _add_data_args(p, True)
    p.add_argument("--num-parts", "--num_parts", dest="num_parts", type=int, required=True)
    p.add_argument("--method", choices=PARTITION_METHODS, default="metis",
                   help="metis (needs DGL) or random (the baseline METIS is measured against)")
    p.add_argument("--seed", type=int, default=0, help="seed of --method random")
    p.add_argument("--out", help="output path without suffix (default DATA_PATH/partitions/METHOD-P)")
    p.set_defaults(func=_cmd_partition)


def _cmd_partition(args: argparse.Namespace) -> int:
    from .partition import compute_partition, default_partition_path, save_partition

    kg = _load(args)
    if args.out:
        out = Path(args.out)
    elif args.data_path:
        out = default_partition_path(Path(args.data_path) / (args.dataset or ""), args.num_parts, args.method)
    else:
        raise KGEError("--out is needed for a built-in dataset (its folder is inside the package)")
    parts = compute_partition(kg, args.num_parts, args.method, args.seed)
    meta = save_partition(out, parts, kg, args.method)
    print(f"{out}.npy: {args.method}, {args.num_parts} parts of {meta['entities_per_part']} entities; "
          f"edge cut {meta['edge_cut']:.3f} (share of training triples whose head and tail parts differ)")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write vectors with their names")
    _add_model_path(p)
    p.add_argument("--format", choices=EXPORT_FORMATS, nargs="+", default=["npy"],
                   help="one or more of %(choices)s (npy uses DGL-KE's file names)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export
    from .saved import TrainedKGE

    trained = TrainedKGE.from_pretrained(args.model_path)
    for fmt in args.format:
        for f in export(trained, args.out, fmt):
            print(f)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kge", description="kgengine: train, evaluate and use knowledge-graph "
                                "embeddings. `kge COMMAND --help` for each command.")
    debug_help = "show the full traceback of an input or environment error instead of its one-line message"
    p.add_argument("-v", "--debug", action="store_true", help=debug_help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_predict, _add_similar, _add_export, _add_partition):
        add(sub)
    for cmd in sub.choices.values():  # `kge train --debug` as well as `kge --debug train`
        cmd.add_argument("-v", "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    # add-on commands: listed by name only, so that `kge --help` imports none of them
    for name, ep in sorted(addon_commands().items()):
        sub.add_parser(name, help=f"add-on command ({ep.value.split(':')[0]}; `kge {name} --help`)", add_help=False)
    return p


ADDON_GROUP = "kgengine.commands"


def addon_commands() -> dict:
    """``{name: entry point}`` of the installed add-on commands (entry-point group
    ``kgengine.commands``). Each entry point names ``main(argv, prog) -> int``; kgengine hands it
    the arguments after the command's name and never imports the add-on otherwise."""
    from importlib.metadata import entry_points

    builtin = {"train", "eval", "predict", "similar", "export", "partition"}
    return {ep.name: ep for ep in entry_points(group=ADDON_GROUP) if ep.name not in builtin}


# What the user or the machine got wrong: one line and exit code 2. Anything else is a bug in kgengine
# and keeps its traceback (--debug shows the traceback for these too).
USER_ERRORS = (KGEError, DataError, OSError, FloatingPointError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    addons = addon_commands() if argv and not argv[0].startswith("-") else {}
    if argv and argv[0] in addons:
        return addons[argv[0]].load()(argv[1:], prog=f"kge {argv[0]}")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"kge {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())
