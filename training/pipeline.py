"""train -> export -> parity -> report -> publish, the same for every recipe."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelspec.reference import REFERENCE_FILE
from modelspec.repository import (
    KERAS_MODEL,
    MANIFEST,
    MODEL_CARD,
    SAVED_MODEL_DIR,
    latest_version,
    read_manifest,
    verify_files,
    version_dir,
)
from modelspec.tensors import signatures_from_manifest
from training import card, plots, reference
from training.card import Section
from training.errors import TrainingError
from training.export import (
    PARITY_MIN_INPUTS,
    check_parity,
    convert_to_onnx,
    keras_runner,
    onnx_runner,
    saved_model_runner,
    write_saved_model,
)
from training.latency import cpu_latency
from training.publish import library_versions, now_iso, publish, staging_area
from training.recipes.base import Dataset, Profile, Recipe, Trained
from training.recipes.common import held_out_inputs

log = logging.getLogger(__name__)
HELD_OUT_SOURCE = "held-out inputs (the test split, then validation)"


def train_and_publish(
    recipe: Recipe, data_dir: Path, out: Path, profile: Profile, opset: int
) -> Path:
    """Train one model and publish it as the next version under ``out``."""
    started = time.monotonic()
    log.info("%s: loading data from %s", recipe.name, data_dir)
    data = recipe.load(data_dir, profile)
    trained = recipe.train(data, profile)
    manifest = base_manifest(recipe, trained, data, profile, time.monotonic() - started)
    held_out = held_out_inputs(data.test.x, data.validation.x, count=profile.parity_inputs(recipe))
    main = recipe.signatures_for(trained.model)[0]
    train_inputs, test_inputs = recipe.reference_inputs(trained.model, data)
    summary = reference.for_model(
        main,
        train_inputs,
        test_inputs,
        keras_runner(recipe.endpoints(trained.model)),
        manifest,
        f"the training split ({len(train_inputs)} items)",
        sizes=recipe.reference_sizes(data),
    )

    def figures(stage: Path) -> list[tuple[str, str]]:
        curves = plots.training_curves(
            trained.history, stage / "training_curves.png", trained.curve_marks
        )
        return [("Training curves", curves), *recipe.figures(trained, data, stage)]

    target = publish_model(
        recipe,
        trained.model,
        out,
        opset,
        manifest,
        parity=(recipe.parity_inputs(trained.model, held_out), HELD_OUT_SOURCE),
        save_keras=trained.model.save,
        figures=figures,
        sections=trained.card_sections,
        reference_stats=summary,
    )
    log.info("%s: published %s (%.0f s)", recipe.name, target, time.monotonic() - started)
    return target


def publish_model(
    recipe: Recipe,
    model: Any,
    out: Path,
    opset: int,
    manifest: dict[str, Any],
    parity: tuple[dict[str, Any], str],
    save_keras: Callable[[Path], None],
    figures: Callable[[Path], list[tuple[str, str]]] = lambda stage: [],
    sections: list[Section] | None = None,
    reference_stats: dict[str, Any] | None = None,
) -> Path:
    """Export, check parity, draw and describe one model in a staging folder, then publish.
    ``reference_stats`` becomes ``reference.json`` (listed and hashed like every file)."""
    with staging_area(out, recipe.name) as stage:
        save_keras(stage / KERAS_MODEL)
        if reference_stats is not None:
            reference.write(reference_stats, stage)
        manifest["parity"] = export_all(recipe, model, stage, opset, *parity)
        seconds = 0.3 if manifest.get("training", {}).get("profile") == "quick" else 2.0
        manifest["latency"] = {
            s.name: cpu_latency(stage / s.onnx_file, s, seconds)
            for s in recipe.signatures_for(model)
        }
        captions = figures(stage)

        def write_card(final: dict[str, Any], directory: Path) -> None:
            text = card.render(
                final,
                recipe.title,
                recipe.intended_use,
                captions,
                sections or [],
                final.get("notes", []),
            )
            (directory / MODEL_CARD).write_text(text)

        return publish(stage, out, recipe.name, manifest, write_card)


def export_all(
    recipe: Recipe, model: Any, stage: Path, opset: int, parity_inputs: dict, source: str
) -> dict[str, Any]:
    """SavedModel and one ONNX file per signature, then the parity check across all three."""
    endpoints = recipe.endpoints(model)
    signatures = recipe.signatures_for(model)
    write_saved_model(model, endpoints, signatures, stage / SAVED_MODEL_DIR)
    for signature in signatures:
        log.info("%s: converting signature '%s' to ONNX", recipe.name, signature.name)
        convert_to_onnx(stage / SAVED_MODEL_DIR, signature, stage / signature.onnx_file, opset)
    runners = {
        "keras": keras_runner(endpoints, signatures),
        "saved_model": saved_model_runner(stage / SAVED_MODEL_DIR, signatures),
        "onnx": onnx_runner(stage, signatures),
    }
    report = check_parity(runners, parity_inputs, source)
    report["opset"] = opset
    return report


def base_manifest(
    recipe: Recipe, trained: Trained, data: Dataset, profile: Profile, seconds: float
) -> dict[str, Any]:
    return {
        "name": recipe.name,
        "version": None,
        "created_at": now_iso(),
        "title": recipe.title,
        "signatures": {s.name: s.to_dict() for s in recipe.signatures_for(trained.model)},
        "labels": list(data.labels),
        "preprocessing": trained.preprocessing,
        "metrics": trained.metrics,
        "data": data.description,
        "test_split": data.test_split,
        "training": {
            "profile": "quick" if profile.quick else "full",
            "seed": profile.seed,
            "seconds": round(seconds, 1),
            **trained.training_config,
        },
        "notes": trained.notes,
        "libraries": library_versions(),
        **trained.manifest_extra,
    }


def reexport(model_path: Path, out: Path, opset: int, data_dir: Path | None) -> Path:
    """Export an existing Keras model as a new version, reusing its manifest when beside it."""
    import keras

    from training.recipes import RECIPES

    if not model_path.is_file():
        raise TrainingError(f"{model_path} is not a file")
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file
        raise TrainingError(f"{model_path} is not a loadable Keras model ({error})") from None
    recipe = RECIPES.get(model.name)
    if recipe is None:
        raise TrainingError(f"model name '{model.name}' is not one of {sorted(RECIPES)}")
    manifest = _source_metadata(recipe, model, model_path)
    manifest.update(name=recipe.name, created_at=now_iso(), libraries=library_versions())
    # The source's signatures describe the same graphs, with what training measured (the
    # autoencoder's code range); without them they are read off the model.
    manifest.setdefault("signatures", {s.name: s.to_dict() for s in recipe.signatures_for(model)})
    manifest.setdefault("title", recipe.title)
    return publish_model(
        recipe,
        model,
        out,
        opset,
        manifest,
        parity=_export_parity_inputs(recipe, model, manifest, data_dir),
        save_keras=lambda path: path.write_bytes(model_path.read_bytes()),
        figures=lambda stage: _carry_figures(model_path.parent, stage),
        reference_stats=_carry_reference(model_path.parent),
    )


def _carry_figures(source: Path, stage: Path) -> list[tuple[str, str]]:
    """The plots of the version being re-exported describe the same model: keep them."""
    if not (source / MANIFEST).is_file():
        return []
    carried = []
    for png in sorted(source.glob("*.png")):
        shutil.copyfile(png, stage / png.name)
        carried.append((png.stem.replace("_", " ").capitalize(), png.name))
    return carried


def _carry_reference(source: Path) -> dict[str, Any] | None:
    """The reference statistics of the version being re-exported describe the same model and
    training data: keep them (the service's drift checks go on across the re-export)."""
    found = source / REFERENCE_FILE
    if not (source / MANIFEST).is_file() or not found.is_file():
        return None
    return json.loads(found.read_text())


def _source_metadata(recipe: Recipe, model: Any, model_path: Path) -> dict[str, Any]:
    beside = model_path.parent / MANIFEST
    if beside.is_file():
        source = json.loads(beside.read_text())
        kept = (
            "title",
            "signatures",
            "labels",
            "preprocessing",
            "metrics",
            "data",
            "test_split",
            "training",
            "decision",
            "ood",
            "detector",
        )
        manifest = {k: source[k] for k in kept if k in source}
        manifest["notes"] = [
            *source.get("notes", []),
            f"Re-exported from {source['name']} version {source['version']}.",
        ]
        return manifest
    manifest = recipe.standalone_metadata(model)
    manifest.update(
        metrics={},
        data={"source": "unknown (exported without its manifest)"},
        test_split={},
        training={"profile": "unknown"},
        notes=[
            f"Exported from {model_path.name} without a training manifest: "
            "no recorded metrics or test split."
        ],
    )
    return manifest


def _export_parity_inputs(
    recipe: Recipe, model: Any, manifest: dict[str, Any], data_dir: Path | None
) -> tuple[dict, str]:
    """Real test inputs when the data is at hand, else inputs from the valid range."""
    if data_dir is not None and manifest.get("test_split"):
        held_out = held_out_inputs(recipe.load_test(data_dir, manifest).x)
        return recipe.parity_inputs(model, held_out), "the recorded test split"
    held_out = recipe.synthetic_input(model, manifest, PARITY_MIN_INPUTS)
    return (
        recipe.parity_inputs(model, held_out),
        "random inputs from the valid input range (no data directory given)",
    )


def evaluate_repository(
    root: Path, data_dir: Path, names: list[str], backend: str
) -> list[dict[str, Any]]:
    """Re-run each model's newest version on its recorded test split; one result per model."""
    from training.recipes import RECIPES

    results = []
    for name in names:
        version = latest_version(root, name)
        if version is None:
            results.append({"model": name, "error": f"no published version under {root}"})
            continue
        directory = version_dir(root, name, version)
        manifest = read_manifest(directory)
        problems = verify_files(directory, manifest)
        if problems:
            results.append(
                {
                    "model": name,
                    "version": version,
                    "error": "files do not match manifest: " + "; ".join(problems),
                }
            )
            continue
        signatures = signatures_from_manifest(manifest)
        runner = (
            onnx_runner(directory, signatures)
            if backend == "onnx"
            else saved_model_runner(directory / SAVED_MODEL_DIR, signatures)
        )
        recipe = RECIPES[name]
        metrics = recipe.evaluate(runner, recipe.load_test(data_dir, manifest), manifest)
        results.append(
            {
                "model": name,
                "version": version,
                "backend": backend,
                "metrics": metrics,
                "recorded": manifest["metrics"],
            }
        )
    return results
