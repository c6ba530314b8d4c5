"""``python -m training``: train, export and evaluate the served models."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from modelspec import MODEL_NAMES
from training.errors import TrainingError

DEFAULT_REPOSITORY_ENV = "MODEL_REPOSITORY"
log = logging.getLogger("training")


def default_repository() -> str:
    return os.environ.get(DEFAULT_REPOSITORY_ENV, "models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, export and publish models")
    train.add_argument("model", choices=[*MODEL_NAMES, "all"])
    train.add_argument(
        "--data-dir",
        help="datasets folder (default: $TRAINING_DATA_DIR, then "
        "a per-user cache filled by downloads)",
    )
    train.add_argument(
        "--out",
        default=default_repository(),
        help="model repository (default: $MODEL_REPOSITORY or ./models)",
    )
    train.add_argument(
        "--quick",
        action="store_true",
        help="small subsets, 1-2 epochs: same artifacts in minutes (tests, CI)",
    )
    train.add_argument("--epochs", type=int, help="override each recipe's epoch count")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--weights",
        default="imagenet",
        help="flowers base weights: 'imagenet' (Keras download), 'none', or a MobileNetV2 "
        "(alpha 1.0, no top) weights file: Keras .h5 or .weights.h5",
    )
    train.add_argument("--opset", type=int, default=17)

    export = commands.add_parser("export", help="re-export a trained Keras model")
    export.add_argument("--model", required=True, help="a .keras file written by `train`")
    export.add_argument("--out", default=default_repository())
    export.add_argument("--opset", type=int, default=17)
    export.add_argument(
        "--data-dir",
        help="check parity on the recorded test split "
        "(default: random inputs from the valid range)",
    )

    evaluate = commands.add_parser("evaluate", help="re-evaluate published models")
    evaluate.add_argument("--repository", default=default_repository())
    evaluate.add_argument("--data-dir")
    evaluate.add_argument(
        "--model",
        action="append",
        choices=MODEL_NAMES,
        help="only this model (repeatable; default: all found)",
    )
    evaluate.add_argument("--backend", choices=["onnx", "saved_model"], default="onnx")
    evaluate.add_argument("--json", dest="json_out", help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_json)
    # A stopped job (SIGTERM from a scheduler) unwinds like Ctrl-C, so staging is cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args)
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was published for the model in progress", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from training.datasets.datadir import resolve_data_dir

    if args.command == "train":
        return _train(args, resolve_data_dir(args.data_dir))
    if args.command == "export":
        return _export(args)
    return _evaluate(args, resolve_data_dir(args.data_dir))


def _train(args: argparse.Namespace, data_dir: Path) -> int:
    from training.recipes.base import Profile

    if args.epochs is not None and args.epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    if args.weights not in ("imagenet", "none") and not Path(args.weights).is_file():
        raise TrainingError(f"--weights {args.weights}: no such file")
    profile = Profile(quick=args.quick, epochs=args.epochs, seed=args.seed, weights=args.weights)
    names = list(MODEL_NAMES) if args.model == "all" else [args.model]
    _quiet_tensorflow()
    import keras

    from training.pipeline import train_and_publish
    from training.recipes import RECIPES

    for name in names:
        keras.utils.set_random_seed(profile.seed)
        path = train_and_publish(RECIPES[name], data_dir, Path(args.out), profile, args.opset)
        print(f"{name}: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from training.datasets.datadir import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir) if args.data_dir else None
    _quiet_tensorflow()
    from training.pipeline import reexport

    print(reexport(Path(args.model), Path(args.out), args.opset, data_dir))
    return 0


def _evaluate(args: argparse.Namespace, data_dir: Path) -> int:
    root = Path(args.repository)
    if not root.is_dir():
        raise TrainingError(f"model repository {root} does not exist")
    names = args.model or [n for n in MODEL_NAMES if (root / n).is_dir()]
    if not names:
        raise TrainingError(f"no models in {root}")
    _quiet_tensorflow()
    from training.pipeline import evaluate_repository
    from training.report import find_drift, print_evaluation

    results = evaluate_repository(root, data_dir, names, args.backend)
    for result in results:
        if "metrics" in result:
            result["drift"] = find_drift(result["metrics"], result["recorded"])
    print_evaluation(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in r or r.get("drift") for r in results) else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _configure_logging(as_json: bool) -> None:
    handler = logging.StreamHandler()
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )
