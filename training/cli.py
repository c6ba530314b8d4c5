"""``python -m training`` (or ``kms-train``): train, export and evaluate models.

    train {digits,flowers,bank,autoencoder,all}  the seed models, on their real datasets
    export --model PATH [--name NAME]            any Keras file, SavedModel or ONNX file
    evaluate                                     re-check published models on their test split

Every subcommand takes ``--repository`` (``--out`` is the same) and ``--log-json``. The
repository is a local folder, or ``s3://bucket/prefix``, ``gs://bucket/prefix`` or
``az://container/prefix`` (train and export; credentials from the cloud's own variables).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from modelspec import MODEL_NAMES
from modelspec.repository import MANIFEST
from modelspec.storage import Remote, RepositoryError, StorageError, parse
from training.errors import TrainingError, one_line

DEFAULT_REPOSITORY_ENV = "MODEL_REPOSITORY"
log = logging.getLogger("training")


def default_repository() -> str:
    return os.environ.get(DEFAULT_REPOSITORY_ENV, "models")


def _common(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand takes, before or after its name."""
    parser.add_argument(
        "--repository",
        "--out",
        dest="repository",
        default=default_repository(),
        help="model repository: a folder, s3://bucket/prefix, gs://bucket/prefix or "
        "az://container/prefix (default: $MODEL_REPOSITORY or ./models)",
    )
    # SUPPRESS: given here or before the subcommand, it counts (a subcommand default would
    # otherwise overwrite the main parser's value).
    parser.add_argument(
        "--log-json", action="store_true", default=argparse.SUPPRESS, help="log as JSON lines"
    )


def _data_dir(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--data-dir", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-json", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, export and publish the seed models")
    _common(train)
    train.add_argument("model", choices=[*MODEL_NAMES, "all"])
    _data_dir(
        train,
        "datasets folder (default: $TRAINING_DATA_DIR, then a per-user cache filled by downloads)",
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
    train.add_argument(
        "--missing",
        action="store_true",
        help="only the models with no published version in the repository",
    )

    export = commands.add_parser(
        "export",
        help="publish a model: any Keras file, a SavedModel directory or an ONNX file",
    )
    _common(export)
    export.add_argument(
        "--model",
        required=True,
        help="a .keras/.h5 file, a SavedModel directory, or a .onnx file (published as is)",
    )
    export.add_argument(
        "--name",
        help="the model's name in the repository (default: the Keras model's name, else the "
        "file or folder name); letters, digits, '.', '_' and '-'",
    )
    export.add_argument(
        "--parity-inputs",
        action="append",
        default=[],
        metavar="[NAME=]FILE.npy",
        help="inputs for the parity check, one .npy per input (default: 1,000 generated)",
    )
    export.add_argument(
        "--reference-inputs",
        metavar="FILE.npy",
        help="a sample of the model's training inputs (batch first, as its first input "
        "takes them): summarised as reference.json, so the service checks drift against it "
        "(default: no drift checks for this model)",
    )
    export.add_argument("--opset", type=int, default=17)
    _data_dir(
        export,
        "for a seed model re-exported with its manifest: check parity on the recorded test "
        "split (default: inputs from the valid range)",
    )

    evaluate = commands.add_parser("evaluate", help="re-evaluate published models")
    _common(evaluate)
    _data_dir(evaluate, "datasets folder (default: $TRAINING_DATA_DIR, then the cache)")
    evaluate.add_argument(
        "--model",
        action="append",
        choices=MODEL_NAMES,
        help="only this model (repeatable; default: every seed model found)",
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
    except (TrainingError, RepositoryError, StorageError) as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was published for the model in progress", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from training.datasets.datadir import resolve_data_dir

    # An unset variable ("--repository $REPO", MODEL_REPOSITORY="") would otherwise mean the
    # current folder, and export's "--model ''" would too (evaluate's --model is a list of names,
    # checked by argparse's choices).
    for option, value in (
        ("--repository", args.repository),
        ("--model", args.model if args.command == "export" else None),
    ):
        if value is not None and not value.strip():
            raise TrainingError(f"{option} is empty: give a path")
    if args.command == "train":
        return _train(args, resolve_data_dir(args.data_dir))
    if args.command == "export":
        return _export(args)
    return _evaluate(args, resolve_data_dir(args.data_dir))


def _train(args: argparse.Namespace, data_dir: Path) -> int:
    from modelspec.repository import latest_version
    from training.recipes.base import Profile

    if args.epochs is not None and args.epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    if args.weights not in ("imagenet", "none") and not Path(args.weights).is_file():
        raise TrainingError(f"--weights {args.weights}: no such file")
    profile = Profile(quick=args.quick, epochs=args.epochs, seed=args.seed, weights=args.weights)
    root = parse(args.repository)
    names = list(MODEL_NAMES) if args.model == "all" else [args.model]
    if args.missing:
        if isinstance(root, Remote):
            published = root.list().versions()
            names = [n for n in names if n not in published]
        else:
            names = [n for n in names if latest_version(root, n) is None]
        if not names:
            print(f"every model is in {root}: nothing to train", flush=True)
            return 0
    _check_datasets(names, data_dir)
    _quiet_tensorflow()
    import keras

    from training.pipeline import train_and_publish
    from training.recipes import RECIPES

    started = time.monotonic()
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}: training ({profile_name(profile)})", flush=True)
        keras.utils.set_random_seed(profile.seed)
        path = train_and_publish(RECIPES[name], data_dir, root, profile, args.opset)
        manifest = getattr(path, "manifest", None) or json.loads((path / MANIFEST).read_text())
        seconds = manifest["training"]["seconds"]
        print(
            f"[{index}/{len(names)}] {name}: {headline(manifest)} in {seconds / 60:.1f} min -> "
            f"{path}",
            flush=True,
        )
    print(f"trained {len(names)} model(s) in {(time.monotonic() - started) / 60:.1f} min")
    return 0


def _check_datasets(names: list[str], data_dir: Path) -> None:
    """Each dataset the models train on, fetched when missing and read once, before
    TensorFlow starts: a missing, undownloadable or malformed one is refused in under a
    second, not after 4 s of imports (0.8 s for all three here; the recipes read them again)."""
    from training.datasets import bank, flowers, mnist

    readers = {"digits": mnist.load_mnist, "autoencoder": mnist.load_mnist}
    readers |= {"bank": bank.load_bank, "flowers": flowers.list_flowers}
    for reader in dict.fromkeys(readers[name] for name in names):
        reader(data_dir)


def profile_name(profile: object) -> str:
    return "quick profile" if getattr(profile, "quick", False) else "full profile"


def headline(manifest: dict) -> str:
    """The metric each model is judged by (README's results table)."""
    metrics = manifest["metrics"]
    if "roc_auc" in metrics:
        return f"test ROC-AUC {metrics['roc_auc']:.4f}"
    if "validation_loss" in metrics:
        return f"validation BCE {metrics['validation_loss']:.4f}"
    return f"test accuracy {metrics['accuracy']:.4f}"


def _seed_export(path: Path, name: str | None) -> bool:
    """A seed model's .keras (re-exported as today, with its manifest when beside it)."""
    from training.bring import keras_archive_config

    if name is not None or path.suffix != ".keras" or not path.is_file():
        return False
    config = keras_archive_config(path)  # bounded, and refuses what is not a .keras archive
    beside = path.parent / MANIFEST
    if beside.is_file():
        try:
            manifest = json.loads(beside.read_text())
        except (OSError, ValueError):
            manifest = None
        if isinstance(manifest, dict):
            return manifest.get("name") in MODEL_NAMES
    return config["config"].get("name") in MODEL_NAMES


def _parity_files(values: list[str]) -> dict[str, Path]:
    found = {}
    for value in values:
        name, _, file = value.rpartition("=")
        if not Path(file).is_file():
            raise TrainingError(f"--parity-inputs {value}: no such file")
        if name in found:
            what = f"input {name!r}" if name else "the one input"
            raise TrainingError(f"--parity-inputs names {what} twice ({found[name]}, {file})")
        found[name] = Path(file)
    return found


def _export(args: argparse.Namespace) -> int:
    """Every refusal names the model file; a failure no check foresaw is still one line."""
    from training.bring import detail

    path = Path(args.model)
    try:
        return _export_model(args, path)
    except TrainingError as error:
        if str(path) in str(error):
            raise
        raise TrainingError(f"{path}: {error}") from None
    except Exception as error:
        log.debug("export of %s failed", path, exc_info=True)
        raise TrainingError(
            f"{path}: the export failed ({type(error).__name__}: {detail(error)})"
        ) from None


def _export_model(args: argparse.Namespace, path: Path) -> int:
    from training.bring import checked_name
    from training.datasets.datadir import resolve_data_dir

    if args.name is not None:
        checked_name(args.name)  # '' (an unset variable) is refused, not replaced
    if not path.exists():
        raise TrainingError(f"{path}: no such file or folder")
    _quiet_tensorflow()
    if _seed_export(path, args.name):
        from training.pipeline import reexport

        data_dir = resolve_data_dir(args.data_dir) if args.data_dir else None
        print(reexport(path, parse(args.repository), args.opset, data_dir))
        return 0
    from training.bring import export_user_model

    given = _parity_files(args.parity_inputs)
    reference = Path(args.reference_inputs) if args.reference_inputs else None
    if reference is not None and not reference.is_file():
        raise TrainingError(f"--reference-inputs {reference}: no such file")
    print(export_user_model(path, parse(args.repository), args.name, args.opset, given, reference))
    return 0


def _evaluate(args: argparse.Namespace, data_dir: Path) -> int:
    root = parse(args.repository)
    if isinstance(root, Remote):
        raise TrainingError(f"evaluate reads a local repository; copy {root} down first")
    if not root.is_dir():
        raise TrainingError(f"model repository {root} does not exist")
    names = args.model or [n for n in MODEL_NAMES if (root / n).is_dir()]
    if not names:
        raise TrainingError(f"no seed models in {root} (user-supplied models have no test split)")
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
    # A second SIGTERM (a scheduler repeating itself) must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
