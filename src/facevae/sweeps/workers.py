"""How a sweep's workers run, wait for each other, and stop.

A worker asks for trials while the study's budget has places, and then, while trials of other
workers are still running, keeps watching them: one that stops sending heartbeats (its worker was
killed) is failed after the grace period and its point queued again (facevae.sweeps.storage), and
the watcher trains it. So the last worker standing finishes the study, on this machine or on any
other that shares the storage.

Ctrl-C and SIGTERM stop a worker between two batches (Lightning's fit) or at once elsewhere; the
trial it was training is marked failed and its point queued again, so that running the same
command continues the sweep. ``--workers W`` processes here: a SIGTERM to the main process is
passed on to them, and the main process waits for them before it exits (143 for SIGTERM, 130 for
Ctrl-C, as a stopped ``facevae train``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import warnings

import optuna
from optuna.trial import TrialState

from facevae.common.signals import Interrupted, in_main_thread, sigterm_as_interrupt
from facevae.sweeps import budget
from facevae.sweeps.storage import queue_again


def objective(config):
    """The study's objective: one trial (facevae.sweeps.study.run_trial); a trial stopped by a signal has its
    point queued again before Optuna marks it failed."""
    from facevae.sweeps.study import run_trial

    def run(trial: optuna.Trial):
        try:
            return run_trial(trial, config)
        except KeyboardInterrupt:  # also Interrupted: SIGTERM, within Lightning's fit or outside it
            queue_again(trial.study, trial.study._storage.get_trial(trial._trial_id))
            # Optuna reports a trial that ends by an exception with its traceback; this one is no error.
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            raise

    return run


def fail_stale(study: optuna.Study) -> None:
    """A killed worker's trial: failed, and its point queued again (facevae.sweeps.storage)."""
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def work_on(study: optuna.Study, config, worker: int, train_left=None) -> None:
    """Train the study's trials until its budget is used up and no other worker's trial is left running.

    ``train_left()`` trains what the budget has left; by default, this worker's trials one after another."""
    from facevae.sweeps.study import _Progress

    def one_by_one():
        study.optimize(objective(config), catch=(Exception,), gc_after_trial=True, callbacks=[_Progress(config, worker)])

    announced = False
    while True:
        fail_stale(study)
        if budget.budget_left(study, config.trials) > 0:
            (train_left or one_by_one)()
            continue
        running = running_elsewhere(study)
        if not running:
            break
        if not announced:
            print(f"[worker {worker}] waiting for trial(s) {', '.join(f'{t:04d}' for t in running)} of other "
                  "workers (retried here if their worker stops)", flush=True)
            announced = True
        time.sleep(config.heartbeat_interval)
    print(f"[worker {worker}] study {config.study!r} has its {config.trials} trials", flush=True)


def running_elsewhere(study: optuna.Study) -> list[int]:
    """Numbers of running trials that a worker took up. One still without ``worker`` was left by a worker that
    died before its first heartbeat, so no heartbeat will ever show it stale: waiting for it would never end."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t.number for t in trials if "worker" in t.user_attrs]


def worker_main(config, worker: int, workers_here: int) -> None:
    """A worker process: a stop by a signal is its exit code (128 + the signal), not a traceback."""
    from facevae.sweeps.study import run_worker

    try:
        with sigterm_as_interrupt():
            run_worker(config, worker, workers_here)
    except KeyboardInterrupt as exc:
        sys.exit(128 + getattr(exc, "signum", signal.SIGINT))


def run_worker_processes(config, workers: int) -> list[str]:
    """``workers`` worker processes on the study; returns the names of those that stopped with an error.

    Raises Interrupted when a signal stopped them: SIGTERM to this process is passed on to them, and
    Ctrl-C reaches them from the terminal; either way this process waits for them to stop.
    """
    # spawn: a forked copy of a process that has touched torch or the database is not safe.
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(config, w, workers), name=f"sweep-worker-{w}")
                 for w in range(workers)]
    for p in processes:
        p.start()
    stopped_by = _join(processes)
    if stopped_by is not None:
        raise Interrupted(stopped_by)
    return [p.name for p in processes if p.exitcode]


def _join(processes) -> int | None:
    """Wait for every process; the signal that stopped them (SIGTERM passed on, or Ctrl-C), if one did."""
    received: list[int] = []

    def pass_on(signum, frame):
        received.append(signum)
        for p in processes:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, pass_on) if in_main_thread() else None
    try:
        while any(p.exitcode is None for p in processes):
            try:
                for p in processes:
                    p.join()
            except KeyboardInterrupt:  # the terminal sent Ctrl-C to the workers too: they are stopping
                received.append(signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return received[0] if received else None
