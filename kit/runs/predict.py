"""Predicting with a finished run: a CV run's fold ensemble (the mean over its fold models,
with the run's test-time views) or an ensemble run's members, weighted per keypoint value.

Everything that predicts with a saved run calls here: the submission, the teacher's
pseudo-labels, benchmarks of test-time views.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from kit.config import Config, ModelConfig
from kit.core.errors import KitError
from kit.core.keypoints import IMAGE_SIZE, SUBSET_COLUMNS
from kit.data.lookup import image_blocks
from kit.data.tables import LookupTable
from kit.model import networks as nets
from kit.model import tasks
from kit.model.tasks import Task
from kit.runs import files
from kit.training import checkpoints, programs, train


@dataclass(frozen=True)
class FoldModel:
    params: object
    net_state: object


def save_fold_model(folder: Path, params, net_state) -> None:
    checkpoints.save_tree(Path(folder) / files.MODEL, (params, net_state))


def load_fold_models(run_dir: Path, network: str) -> list[FoldModel]:
    config = files.read_config(run_dir)
    return [load_fold_model(config, network, files.fold_dir(run_dir, network, fold))
            for fold in range(config.folds)]


def load_fold_model(config: Config, network: str, folder: Path) -> FoldModel:
    """The model a fold's folder keeps, of the network `config` builds."""
    path = Path(folder) / files.MODEL
    if not path.exists():
        raise KitError(f"{path}: missing; the run is unfinished (run `make cv` to finish it)")
    (params, net_state), _ = checkpoints.load_tree(
        path, _model_like(config.model, tasks.task_for(network).outputs))
    return FoldModel(params, net_state)


@functools.lru_cache(maxsize=8)
def _model_like(model: ModelConfig, outputs: int):
    """The shapes of a model's (params, net_state), which a saved one loads into: traced,
    never computed."""
    net = nets.build(model, outputs)
    return jax.eval_shape(functools.partial(net.init, is_training=True), jax.random.PRNGKey(0),
                          np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.float32))


def predict_images(config: Config, task: Task, fold_models: list[FoldModel],
                   images: np.ndarray) -> np.ndarray:
    """The fold models' mean pixel keypoints (each with the run's test-time views)."""
    predict = _predictor(config.model, task, config.flip_tta,
                         train.tta_views(config.tta_shift, config.tta_zoom, config.tta_rotate),
                         config.augment.mirror_x)
    outputs = [
        programs.predict_batched(predict, m.params, m.net_state, images,
                                 config.train.eval_batch_size)
        for m in fold_models
    ]
    return np.mean(outputs, axis=0)


@functools.lru_cache(maxsize=8)
def _predictor(model: ModelConfig, task: Task, flip_tta: bool, views: tuple, mirror_x: float):
    return train.make_predict(nets.build(model, task.outputs), task, flip_tta, views, mirror_x)


def predict_run(run_dir: Path, subset: str, images: np.ndarray,
                full: np.ndarray | None = None) -> np.ndarray:
    """Any run's prediction of a subset's values for uint8 (N, 96, 96) images: a CV run's
    fold ensemble, or an ensemble run's per-column weighted sum of its members'.

    `full` marks the images of the full annotation source (the test faces the lookup table
    asks all values of): their 4-key values are made as the OOF's were on such faces
    (tasks.subset_predictions), so a blend or choice fitted on that OOF meets the same
    predictions on the test set. Without it, every image is taken as the core-only source's.
    """
    members = files.ensemble_members(run_dir)
    if members:
        return _predict_ensemble(run_dir, members, subset, images, full)
    config = files.read_config(run_dir)
    if subset not in config.subsets:
        raise KitError(f"{run_dir}: the run has no {subset}-key models (its subsets: "
                       f"{', '.join(config.subsets)})")
    network = tasks.network_for(config, subset)
    outputs = predict_images(config, tasks.task_for(network),
                             load_fold_models(run_dir, network), images)
    return tasks.subset_predictions(network, subset, outputs, full)


def _predict_ensemble(run_dir: Path, members: list[Path], subset: str, images: np.ndarray,
                      full: np.ndarray | None) -> np.ndarray:
    record = files.read_ensemble(run_dir)
    weights = record["weights"].get(subset)
    if weights is None:
        raise KitError(f"{run_dir / files.ENSEMBLE}: no {subset}-key weights; expected a run "
                       f"that answers the {subset}-key subset")
    ridge = (record.get("stack") or {}).get(subset)
    columns = SUBSET_COLUMNS[subset]
    needed = {name for name, _ in ridge["features"]} if ridge else set()
    needed |= {name for column in columns for name, w in weights[column].items() if w}
    # A member with no weight and no stacked feature in this subset need not run.
    predictions = {member.name: predict_run(member, subset, images, full)
                   for member in members if member.name in needed}
    return ensemble_values(weights, ridge, predictions, columns)


def ensemble_values(weights: dict, ridge: dict | None, member_predictions: dict[str, np.ndarray],
                    columns: tuple[str, ...]) -> np.ndarray:
    """An ensemble's values of one subset from its members' (name -> rows x `columns`), as
    ensemble.json says: each column's weighted sum, plus a stack's ridges' residual."""
    total = sum(np.array([weights[c].get(name, 0.0) for c in columns]) * values
                for name, values in member_predictions.items())
    return total + stacked_values(ridge, member_predictions, columns) if ridge else total


def stacked_values(ridge: dict, member_predictions: dict[str, np.ndarray],
                   columns: tuple[str, ...]) -> np.ndarray:
    """A stack ensemble's residual for one subset (ensemble.json's `stack` entry): each
    column's intercept plus its coefficients over the (member, column) features, from each
    member's predictions (name -> rows x `columns`)."""
    position = {name: i for i, name in enumerate(columns)}
    features = np.column_stack([member_predictions[member][:, position[column]]
                                for member, column in ridge["features"]])
    return np.column_stack([ridge["columns"][c]["intercept"]
                            + features @ np.asarray(ridge["columns"][c]["coefficients"])
                            for c in columns])


def predict_test(run_dir: Path, subsets: tuple[str, ...], images: np.ndarray,
                 image_ids: np.ndarray, lookup: LookupTable) -> dict[str, np.ndarray]:
    """A run's test predictions per subset, each face's 4-key values made as its lookup
    block's source was in the OOF (kit.data.lookup.image_blocks)."""
    full = image_blocks(lookup, image_ids) == "full"
    return {subset: predict_run(run_dir, subset, images, full) for subset in subsets}
