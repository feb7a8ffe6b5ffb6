"""The study's storage: any SQLAlchemy URL, with heartbeats so that a killed worker's trial is failed.

Every worker's storage beats every ``heartbeat_interval`` seconds for its running trial. A trial
whose last beat is older than ``grace_period`` belongs to a worker that died (SIGKILL, power cut,
lost node): Optuna's ``fail_stale_trials`` marks it FAIL, and ``retry_killed_trial`` queues its
parameters once more (on the same grid point), so the sweep still covers them. Workers run that
check when they start and before every trial, so a killed worker's trial is taken back by the next
worker to look after the grace period. A trial that fails by itself (NaN loss, a bad
configuration) is not retried. The retry continues the killed trial's run from its last checkpoint
(``retried_trial``), so what it had trained is not trained again.
"""

from __future__ import annotations

import threading
import warnings

import optuna
from optuna.trial import TrialState


def check_storage_url(url: str) -> None:
    """A one-line ValueError for a ``--storage`` that is no SQLAlchemy URL, or whose database driver is not
    installed: SQLAlchemy says either only as a traceback, and only once the study is opened."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"--storage {url!r} is not a database URL (e.g. sqlite:///sweep.db or "
                         "postgresql://USER:PASSWORD@HOST/DATABASE)") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"--storage {shown}: SQLAlchemy knows no database called {parsed.drivername!r}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        how = ("pip install 'facevae[postgres]'" if parsed.get_backend_name() == "postgresql"
               else f"install the Python package that provides {exc.name!r}")
        raise ValueError(f"--storage {shown}: its database driver ({exc.name}) is not installed; {how}") from None


def open_storage(url: str, heartbeat_interval: int = 60, grace_period: int | None = None):
    """The study's RDBStorage; a ValueError that names the URL (without its password) when it cannot be opened."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    check_storage_url(url)
    # SQLite serialises writers; several workers and their heartbeats wait for the lock instead of failing.
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period or 2 * heartbeat_interval, heartbeat_stale_trial_callback=retry_killed_trial)
    except SQLAlchemyError as exc:  # no server there, a wrong password, a database that does not exist
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ValueError(f"--storage {make_url(url).render_as_string(hide_password=True)}: cannot open the "
                         f"database ({reason[0] if reason else type(exc).__name__})") from None


def retry_killed_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a killed trial's point again, once; a retry that is killed too stays failed (the point may be
    what kills its workers)."""
    if "failed_trial" in trial.system_attrs:
        return
    queue_again(study, trial)


def queue_again(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A waiting trial on ``trial``'s point, which takes its place in the budget (facevae.sweeps.budget)."""
    # grid_id keeps GridSampler from handing this point (or a new one) to the retry a second time.
    system_attrs = {k: trial.system_attrs[k] for k in ("grid_id", "search_space") if k in trial.system_attrs}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs={**system_attrs, "failed_trial": trial.number}))


def retried_trial(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """The stopped or killed trial whose point ``trial`` is the retry of (see queue_again), if it is one."""
    number = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
    return None if number is None else next(t for t in study.get_trials(deepcopy=False) if t.number == number)


class Heartbeats:
    """Heartbeats for trials asked for outside Optuna's optimize loop (a stack's), sent as that loop sends them
    for its one trial, from each trial's first moment: a killed stack's trials are then failed and retried too."""

    def __init__(self, study: optuna.Study):
        self.storage, self.trials, self.stop = study._storage, [], threading.Event()
        self.thread = threading.Thread(target=self._beat, name="facevae-heartbeats", daemon=True)

    def add(self, trial: optuna.Trial) -> None:
        if self.storage.get_heartbeat_interval():
            self.storage.record_heartbeat(trial._trial_id)
        self.trials.append(trial)

    def _beat(self) -> None:
        while not self.stop.wait(self.storage.get_heartbeat_interval()):
            for trial in list(self.trials):
                self.storage.record_heartbeat(trial._trial_id)

    def __enter__(self) -> "Heartbeats":
        if self.storage.get_heartbeat_interval():
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
