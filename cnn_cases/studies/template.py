"""The shape of a study, and the run every study shares.

A study trains a few variants (one config each) with the engine, one run directory per
variant under `workdir/nets/<variant>` (a finished variant is skipped, an unfinished one
resumes), then writes into `workdir`:

    results.json   one entry per variant (errors, parameters, steps, seconds, study columns)
    curves.csv     every evaluation of every variant: step, variant, error columns
    <name>.png     the study's figure

A study module subclasses `Study` and supplies its variants, its rows and its figure; `run`
is the template. Its configs live in the launcher file `experiments/<name>.py`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging

from cnn_cases.data import splits
from cnn_cases.engine import defaults, guard, loading, rundir, train
from cnn_cases.engine.loading import load_variables as load_variables
from cnn_cases.engine.loading import normalised_examples as normalised_examples
from cnn_cases.engine.loading import stored_results as stored_results
from cnn_cases.engine.rundir import RunResult
from cnn_cases.studies import results as results_lib
from cnn_cases.studies.results import Curves, Results

# A study reads finished runs through the engine: `load_variables`, `normalised_examples` and
# `stored_results` above are the engine's, for the studies.

Configs = dict[str, ml_collections.ConfigDict]
Runs = dict[str, list[RunResult]]


def say(config: ml_collections.ConfigDict, message: str) -> None:
    """A progress line (absl INFO) on process 0 when `config.verbose`."""
    if config.verbose and jax.process_index() == 0:
        logging.info("%s", message)


def net_dir(workdir: str, name: str) -> str:
    """The run directory of variant `name`."""
    return os.path.join(workdir, "nets", name)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(H, W, C) of the study's training images, as its runs see them."""
    return splits.image_shape(loading.load_split(config, config.train_split), config.pad_to)


def create_model(
    config: ml_collections.ConfigDict, variant: ml_collections.ConfigDict
) -> nn.Module:
    """The model of `variant` with the number of classes of the study's dataset."""
    num_classes = loading.load_split(config, config.train_split).num_classes
    return defaults.create_model(variant, num_classes)


def run_variants(configs: Configs, workdir: str, *, stop_after: int | None = None) -> Runs | None:
    """Trains each variant in its run directory, all its seeds (`config.seeds`) as one
    program; one result per seed. None if `stop_after` interrupted a variant."""
    runs = {}
    for i, (name, c) in enumerate(configs.items()):
        say(c, f"[{i + 1}/{len(configs)}] {name}")
        r = train.train(c, net_dir(workdir, name), stop_after=stop_after)
        if r is None:
            return None
        runs[name] = r
    return runs


def train_net(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_after: int | None = None,
    init_variables: Mapping[str, Any] | None = None,
) -> list[RunResult] | None:
    """One net trained by the engine in its own `workdir` (`cnn_cases.engine.train.train`)."""
    return train.train(config, workdir, stop_after=stop_after, init_variables=init_variables)


def read_curves(workdir: str, name: str) -> list[dict[str, float]]:
    """The evaluation curve of a finished variant (means and stds over its seeds)."""
    stored = rundir.read_results(net_dir(workdir, name))
    if stored is None:
        raise ValueError(f"variant {name!r} has not finished in {workdir!r}")
    return results_lib.seed_curves(stored)


@dataclasses.dataclass(frozen=True)
class Job:
    """One call of a study's run: its config, variants, workdir and `stop_after`."""

    config: ml_collections.ConfigDict
    configs: Configs
    workdir: str
    stop_after: int | None = None


@dataclasses.dataclass(frozen=True)
class Trained:
    """A finished variant: the study's config, the variant's name and training config, and
    its seeds' results."""

    study: ml_collections.ConfigDict
    name: str
    config: ml_collections.ConfigDict
    runs: Sequence[RunResult]


@dataclasses.dataclass(frozen=True)
class Figure:
    """What a study's figure is drawn from, and where it goes."""

    config: ml_collections.ConfigDict
    results: Results
    curves: Curves
    path: str
    title: str


class Study:
    """A study: variants trained by the engine, a row each, a table and a figure.

    Subclasses set `name` and `columns` (the table's own columns, before `RUN_COLUMNS`) and
    define `variants` and `figure`; the other methods have defaults.
    """

    name: str = ""
    columns: Sequence[tuple[str, str]] = ()

    def validate(self, config: ml_collections.ConfigDict) -> None:
        """One-line ValueError for a config the study cannot run (before any training)."""

    def variants(self, config: ml_collections.ConfigDict) -> Configs:
        """The training config of every variant, by name."""
        raise NotImplementedError

    def introduce(self, job: Job) -> Iterable[str]:
        """Lines said before training (shape tables, arithmetic)."""
        return ()

    def row(self, variant: Trained) -> dict[str, Any]:
        """The results row of a finished variant."""
        return results_lib.base_row(variant.runs)

    def title_extra(self, config: ml_collections.ConfigDict) -> str:
        """What the figure title adds after the dataset (a width, say)."""
        return ""

    def figure(self, figure: Figure) -> None:
        """Draws the study's figure (from `cnn_cases.report.figures`) into `figure.path`."""
        raise NotImplementedError

    def extra_files(self, config: ml_collections.ConfigDict) -> Mapping[str, Any]:
        """JSON files written beside results.json, by file name."""
        return {}

    def expected_minutes(self, config: ml_collections.ConfigDict) -> float:
        return config.expected_minutes

    def summary(self, results: Results, workdir: str) -> str:
        """What the launcher prints at the end: the table."""
        return results_lib.table(results, (*self.columns, *results_lib.RUN_COLUMNS))

    # The template.

    def run(
        self, config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
    ) -> Results | None:
        """Trains every variant, writes the study's files and returns `results` (None if
        `stop_after` stopped it; rerunning resumes)."""
        configs = self.variants(config)
        for c in configs.values():  # every variant's model, sizes and steps, before any data
            defaults.validate(c)
        self.validate(config)
        rundir.check_workdir(workdir)
        with guard.workdir_lock(workdir):  # one writer for every net under the workdir
            return self._run(Job(config, configs, workdir, stop_after))

    def _run(self, job: Job) -> Results | None:
        config = job.config
        for line in self.introduce(job):
            say(config, line)
        runs = self.train(job)
        collected = None if runs is None else self.collect(job, runs)
        if collected is None:
            return None
        results, curves = collected
        self.write(job, results, curves)
        return results

    def train(self, job: Job) -> Runs | None:
        """Every variant's results (None if `stop_after` stopped the training)."""
        return run_variants(job.configs, job.workdir, stop_after=job.stop_after)

    def collect(self, job: Job, runs: Runs) -> tuple[Results, Curves] | None:
        """The results rows and curves of the trained variants."""
        trained = [Trained(job.config, n, job.configs[n], rs) for n, rs in runs.items()]
        results = {t.name: {**self.row(t), "init": t.config.init} for t in trained}
        return results, {n: results_lib.seed_curves(rs) for n, rs in runs.items()}

    def write(self, job: Job, results: Results, curves: Curves) -> None:
        """results.json, the extra files, curves.csv and the figure; process 0 only."""
        if jax.process_index() != 0:
            return
        for file_name, obj in self.extra_files(job.config).items():
            rundir.write_json(os.path.join(job.workdir, file_name), obj)
        rundir.write_json(os.path.join(job.workdir, "results.json"), results)
        results_lib.write_curves_csv(os.path.join(job.workdir, "curves.csv"), curves)
        title = results_lib.title(job.config, self.title_extra(job.config))
        path = os.path.join(job.workdir, f"{self.name}.png")
        self.figure(Figure(job.config, results, curves, path, title))
