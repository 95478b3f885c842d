"""Submit a sweep driver to a Ray cluster through the Ray Jobs API, and follow it.

`submit_job` sends the project's code with the job (its Ray runtime environment), and the resolved spec and
the storage URI in its environment; `powersweep.job_driver` runs on the head node and connects to its own
cluster. The code is the checkout as the job's working directory when powersweep runs from one (installed
editable or on PYTHONPATH), else the installed `powersweep` package as a `py_modules` entry: the package's
folder alone, never the site-packages around it (the nodes bring the dependencies). The other functions
take the job id that `submit_job` returned.

Clusters with token authentication (the default for Ray >= 2.59 clusters started with a token) need the
cluster's token on the client: `RAY_AUTH_TOKEN`, else the file named by `RAY_AUTH_TOKEN_PATH`, else
`~/.ray/auth_token`, the order Ray itself reads them in.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from powersweep.sweeps.spec import SweepSpec

DRIVER = "python -m powersweep.job_driver"  # run on the head node, importing the code the job uploaded
SPEC_ENV = "POWERSWEEP_SPEC"  # the resolved spec, as JSON
STORAGE_ENV = "POWERSWEEP_STORAGE"  # the results store URI every node writes to
REPLACE_ENV = "POWERSWEEP_REPLACE"  # "1": submit --replace (the stored sweep of the name is set aside)
# The folder above cluster/: a checkout's root, or in a regular install the `powersweep` package itself.
CODE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Never uploaded: environments, results, reports and caches (gitignore patterns; a leading / anchors the
# pattern at the project root).
EXCLUDES = [
    "/.venv",
    "/runs",
    "/out",
    "/.git",
    "/build",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".hypothesis",
]
TOKEN_FIX = (
    "set RAY_AUTH_TOKEN to the cluster's token (print it on the head node with `ray get-auth-token`) "
    "or RAY_AUTH_TOKEN_PATH to a file holding it"
)


class ClusterError(ValueError):
    """A cluster submission cannot go ahead; the message names the value and the fix."""


def is_jobs_address(address: str | None) -> bool:
    """True for a Jobs API (dashboard) address such as http://HOST:8265; ray:// and host:port are not."""
    return bool(address) and address.startswith(("http://", "https://"))


def cluster_storage(storage: str) -> str:
    """`storage` if every node of a cluster could reach it; a relative path or memory:// cannot work."""
    if storage.startswith("memory://"):
        raise ClusterError(
            f"storage {storage!r} lives in one process: on a cluster give a shared filesystem "
            "path or an object store URI such as s3://bucket/runs"
        )
    if "://" not in storage and not os.path.isabs(os.path.expanduser(storage)):
        raise ClusterError(
            f"storage {storage!r} is a relative path, which cannot work on a cluster (the driver "
            "runs in its own directory on the head node): give --storage an absolute path that "
            "every node mounts, e.g. /shared/runs, or an object store URI such as s3://bucket/runs"
        )
    return storage


def auth_token() -> tuple[str | None, str]:
    """The token to send and where it came from, in Ray's own order of precedence."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return _read_token(path, "RAY_AUTH_TOKEN_PATH"), f"RAY_AUTH_TOKEN_PATH={path}"
    default = os.path.expanduser("~/.ray/auth_token")
    if os.path.isfile(default):
        return _read_token(default, "the default token file"), default
    return None, "no token"


def _read_token(path: str, what: str) -> str:
    try:
        with open(path) as f:
            token = f.read().strip()
    except OSError as err:
        raise ClusterError(f"{what} {path!r} cannot be read ({err.strerror}): {TOKEN_FIX}") from None
    if not token:
        raise ClusterError(f"{what} {path!r} is empty: {TOKEN_FIX}")
    return token


@contextlib.contextmanager
def _jobs_errors(address: str, source: str, job_id: str | None = None):
    """Turn the Jobs client's failures into one line naming the address and the fix."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as err:
        refused = "needs a token" if source == "no token" else f"refused the token from {source}"
        reason = str(err.message).splitlines()[0]
        raise ClusterError(f"Ray cluster at {address} {refused} ({reason}): {TOKEN_FIX}") from None
    except ConnectionError:
        raise ClusterError(
            f"no Ray dashboard answers at {address}: check the address, and forward the "
            "dashboard port if it listens on the head's loopback (ssh -L 8265:127.0.0.1:8265 "
            "HEAD, or kubectl port-forward svc/HEAD-SVC 8265)"
        ) from None
    except RuntimeError as err:
        what = f"job {job_id!r}" if job_id else "submission"
        raise ClusterError(
            f"{what} at {address}: {str(err).splitlines()[0]}: list the cluster's jobs with "
            f"`ray job list --address {address}`"
        ) from None


def _client(address: str, token: str | None = None):
    """A JobSubmissionClient carrying the bearer token, and where the token came from."""
    from ray.job_submission import JobSubmissionClient

    token, source = (token, "the token argument") if token else auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with _jobs_errors(address, source):
        return JobSubmissionClient(address, headers=headers), source


def job_code(root: str = CODE_ROOT) -> dict:
    """What a job uploads from `root` (CODE_ROOT): a checkout as the job's working directory, or a regular
    install's `powersweep` package as a py_module.

    A checkout keeps the libraries' folders beside `powersweep/` (pyproject.toml maps them into it for a
    wheel); a regular install keeps them inside the package. A py_module keeps its folder's name: Ray unpacks
    `powersweep/` on every node and puts the folder above it on PYTHONPATH, ahead of site-packages, so
    `python -m powersweep.job_driver` and every trial import the uploaded code, whatever the nodes have.
    """
    if os.path.isfile(os.path.join(root, "powersweep", "job_driver.py")):
        return {"working_dir": root, "excludes": EXCLUDES}
    return {"py_modules": [root], "excludes": EXCLUDES}


def runtime_env(spec: SweepSpec, storage: str, *, replace_sweep: bool = False) -> dict:
    """The job's runtime environment: the project's code (`job_code`), the sweep in its environment."""
    return {
        **job_code(),
        "env_vars": {
            SPEC_ENV: json.dumps(spec.to_dict()),
            STORAGE_ENV: storage,
            REPLACE_ENV: "1" if replace_sweep else "0",
        },
    }


def submit_job(
    spec: SweepSpec, *, storage: str, address: str, token: str | None = None, replace_sweep: bool = False
) -> str:
    """Submit `spec`'s sweep driver as a Ray job at `address` (http://HOST:8265); returns the job id."""
    storage = cluster_storage(storage)
    client, source = _client(address, token)
    with _jobs_errors(address, source):
        return client.submit_job(
            entrypoint=DRIVER,
            runtime_env=runtime_env(spec, storage, replace_sweep=replace_sweep),
            submission_id=f"powersweep-{spec.name}-{uuid.uuid4().hex[:8]}",
            metadata={"sweep_id": spec.name, "storage": storage},
        )


def job_status(job_id: str, *, address: str, token: str | None = None) -> dict:
    """State of a submitted sweep:
    status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), message, metadata."""
    client, source = _client(address, token)
    with _jobs_errors(address, source, job_id):
        info = client.get_job_info(job_id)
    return {
        "job_id": job_id,
        "status": str(info.status.value),
        "message": info.message or "",
        "metadata": dict(info.metadata or {}),
        "entrypoint": info.entrypoint,
    }


def job_logs(job_id: str, *, address: str, follow: bool = False, token: str | None = None) -> str | None:
    """The driver's output so far; with `follow`, print it as it comes until the job ends (returns None)."""
    client, source = _client(address, token)
    with _jobs_errors(address, source, job_id):
        if not follow:
            return client.get_job_logs(job_id)
        import asyncio  # only to follow a job: asyncio costs a third of a second to import

        asyncio.run(_print_tail(client, job_id))
    return None


async def _print_tail(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True, file=sys.stdout)


def stop_job(job_id: str, *, address: str, token: str | None = None) -> bool:
    """Ask the cluster to stop a submitted sweep; False if it had already ended. Stored rows stay."""
    client, source = _client(address, token)
    with _jobs_errors(address, source, job_id):
        return client.stop_job(job_id)
