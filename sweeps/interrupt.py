"""A sweep driver ended by SIGINT or SIGTERM:
its trials stop, its stored rows stay, and it says how to finish.

Left to Ray, the two signals end a driver badly. SIGTERM reaches the failure-signal handler that Ray's core
worker (C++, absl's) installs when `ray.init` connects: a `*** SIGTERM received` stack dump, then abort (exit
code 134). SIGINT reaches the handler `Tuner.fit` installs: Tune stops its trials, advises
`Tuner.restore(path=...)` (of no use here: the store says what is done, and `powersweep resume DIR` finishes
any sweep) and returns as if the run were over, so the driver goes on to report a sweep with missing rows.

So a driver runs its sweep inside `interruptible(...)`: the first SIGINT or SIGTERM raises `SweepInterrupted`
in the main thread wherever it is, which ends the sweep there (the sweep's lock is released on the way up);
then Ray is shut down, which ends the trials (each row is written to the store atomically as soon as it is
final, so a stored row is whole and one being written is not there), one line on stderr names the signal and
the resume command, and the caller exits with 128 + the signal's number (130, 143). A second signal while it
stops ends the process at once, after the same line. Ray's own handlers are kept out: Tune's SIGINT handler by
`TUNE_DISABLE_SIGINT_HANDLER=1`, and those `ray.init` installs by `ray_starting()` around it, which holds a
signal that comes while Ray starts until it has started. Checked for Ray 2.60 by tests/sweeps/test_signals.py.

Example::

    with interruptible(program="powersweep submit",
                       resume=resume_hint("runs/cpu-quick", sweep_id="cpu-quick")):
        result = submit(spec)  # on SIGTERM: SweepInterrupted once Ray is down and the line printed; exit 143
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"  # "1": Tuner.fit installs no SIGINT handler of its own


class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended the sweep. A KeyboardInterrupt: no `except Exception` on its way up (Tune's, a
    library's) takes it for a failed trial or a user error, and Ray's blocking calls (`ray.wait`, `ray.get`),
    which run the signal handlers themselves, let only a KeyboardInterrupt through (as a new one: any other
    exception would come out as a SystemError)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process the signal ended: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@dataclass
class _Watch:
    """The state of the sweep `interruptible` runs."""

    program: str  # how the line starts, e.g. "powersweep submit"
    resume: str  # the command that finishes the sweep
    received: int | None = None  # the first signal
    starting: bool = False  # within `ray_starting`: a signal is held until Ray has started
    said: bool = False  # the line is printed

    def say(self) -> None:
        if not self.said:
            self.said = True
            name = signal.Signals(self.received).name
            # On a terminal the status line may be open (sweeps/progress.py): ours starts on a line of its
            # own.
            start = "\n" if sys.stderr.isatty() else ""
            print(
                f"{start}{self.program}: interrupted by {name}; the rows stored so far are kept; to finish "
                f"the sweep, run: {self.resume}",
                file=sys.stderr,
                flush=True,
            )


_watch: _Watch | None = None  # set within `interruptible`


@contextlib.contextmanager
def interruptible(*, program: str, resume: str):
    """Within: SIGINT and SIGTERM end the sweep (see the module's docstring) by raising SweepInterrupted, once
    Ray is shut down and the line printed; the caller exits with its `exit_code`. A block that ends otherwise
    restores the handlers it found. Outside the main thread (where no handler can be set) nothing changes."""
    global _watch
    if threading.current_thread() is not threading.main_thread() or (_watch and _watch.received is None):
        yield  # nested: the outer block handles the signals
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}, os.environ.get(TUNE_SIGINT_ENV)
    os.environ[TUNE_SIGINT_ENV] = "1"  # read when Tuner.fit starts
    _watch = watch = _Watch(program=program, resume=resume)
    _install()
    try:
        yield
        if watch.received is not None:  # its KeyboardInterrupt was caught on the way
            raise SweepInterrupted(watch.received)
    except KeyboardInterrupt as stop:  # ours, or the one a Ray call raised in its place
        watch.received = watch.received or getattr(stop, "signum", signal.SIGINT)
        _stop_ray()  # a second signal meanwhile ends the process at once (`_on_signal`)
        watch.say()
        raise SweepInterrupted(watch.received) from None
    finally:
        if watch.received is None:
            _restore(*previous)


def _restore(handlers: dict, tune_env: str | None) -> None:
    global _watch
    _watch = None
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    if tune_env is None:
        os.environ.pop(TUNE_SIGINT_ENV, None)
    else:
        os.environ[TUNE_SIGINT_ENV] = tune_env


@contextlib.contextmanager
def ray_starting():
    """Around `ray.init` (inside `interruptible`; elsewhere it does nothing): a signal that comes while Ray
    starts raises SweepInterrupted once it has started, the processes a local Ray starts get process groups of
    their own, and this driver's handlers replace those `ray.init` installs.

    Ray sets Python SIGTERM handlers as it starts (they would exit with code 1 or 15, saying nothing), kept
    out here, and its core worker then sets its C++ failure-signal handler for SIGTERM (a stack dump, then
    abort), which `signal.signal` replaces afterwards: it sets the process's handler whatever Python last set.
    (A SIGTERM in the few tenths of a second between the two still prints the dump; the driver then ends as
    here.) A SIGTERM sent to the driver's process group (`kill -TERM -PGID`, a scheduler ending a job) then
    reaches the driver alone, as Ray's own processes get groups of their own on Windows (Ray blocks SIGINT in
    them, so a terminal's Ctrl-C never reached them): a GCS ended by it would hold the driver's `ray.shutdown`
    for 8 s. They still end with the driver (`ray.shutdown`, Ray's fate-sharing, `sweeps.lifetime`).
    """
    watch = _watch
    if watch is None:
        yield
        return
    from ray._private import services
    from ray._private import utils as ray_utils

    set_sigterm_handler, popen = ray_utils.set_sigterm_handler, services.ConsolePopen
    ray_utils.set_sigterm_handler = lambda handler: None
    services.ConsolePopen = _in_own_group(popen)
    watch.starting = True
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler, services.ConsolePopen = set_sigterm_handler, popen
        watch.starting = False
        _install()
    if watch.received is not None:
        raise SweepInterrupted(watch.received)


def _in_own_group(popen: type) -> type:
    """`popen` (a subprocess.Popen) whose processes start in a process group of their own."""

    class InOwnGroup(popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "process_group": 0})

    return InOwnGroup


def resume_hint(storage: str, *, sweep_id: str | None, address: str | None = None) -> str:
    """The command that finishes the sweep `sweep_id` stored at `storage` (`--sweep` where the store holds
    other sweeps, or may: an object store is not listed; none for None, the store's only sweep; `--address` as
    the driver was given it)."""
    if sweep_id is None:
        words = ["powersweep", "resume", storage if "://" in storage else os.path.abspath(storage)]
    elif "://" in storage:
        words = ["powersweep", "resume", storage, "--sweep", sweep_id]
    else:
        storage = os.path.abspath(storage)
        sweeps = os.path.join(storage, "sweeps")
        others = set(os.listdir(sweeps)) - {sweep_id} if os.path.isdir(sweeps) else set()
        words = ["powersweep", "resume", storage] + ["--sweep", sweep_id] * bool(others)
    if address not in (None, "local"):
        words += ["--address", address]
    return shlex.join(words)


def _install() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame) -> None:
    watch = _watch
    if watch is None:  # the block ended as the signal came: as if it had come just after
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
        os.kill(os.getpid(), signum)
        return
    if watch.received is not None:  # a second signal while the sweep stops: end now
        watch.say()
        os._exit(128 + signum)
    watch.received = signum
    if not watch.starting:
        raise SweepInterrupted(signum)


def _stop_ray() -> None:
    """Shut down the Ray this process started or joined: the trials end with it (on a cluster, the job's
    actors end with their driver)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):  # on the way out: Ray's processes may have had the signal too
            ray.shutdown()
