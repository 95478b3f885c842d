"""`powersweep` subcommands for sweeps submitted to a cluster as Ray jobs: submit, resume, status, logs, stop.

The sweep commands hand over to these when the address (`--address`, else RAY_ADDRESS) is a Jobs API address
(http://HOST:8265); a ray:// or host:port address keeps the driver in the calling process.
"""

from __future__ import annotations

import sys

from powersweep.cli.options import add_json_option, address_help, print_json, required_address
from powersweep.cluster.jobs import job_logs, job_status, stop_job, submit_job

ADDRESS_HELP = address_help("the cluster's Jobs API (dashboard) address, e.g. http://127.0.0.1:8265")


def submit_job_command(args) -> int:
    """`powersweep submit SPEC --address http://...`: print the job id of the submitted sweep driver."""
    from powersweep.sweeps.spec import load_spec

    spec = load_spec(args.spec)
    return _submitted(
        submit_job(
            spec, storage=args.storage or spec.storage, address=args.address, replace_sweep=args.replace
        ),
        args.address,
        as_json=args.json,
    )


def resume_job_command(args) -> int:
    """`powersweep resume DIR --address http://...`: the stored spec again, as a job (runs what DIR lacks)."""
    from powersweep.sweeps.sweep import stored_spec  # the store's pandas and pyarrow: only for this command

    spec = stored_spec(args.dir, sweep_id=args.sweep)
    return _submitted(
        submit_job(spec, storage=args.dir, address=args.address), args.address, as_json=args.json
    )


def _submitted(job_id: str, address: str, *, as_json: bool) -> int:
    if as_json:
        print_json({"job_id": job_id, "address": address})
    else:
        print(job_id)
    print(
        f"follow it: powersweep status {job_id} --address {address}  |  powersweep logs {job_id} "
        f"--address {address} --follow  |  powersweep stop {job_id} --address {address}",
        file=sys.stderr,
    )
    return 0


def job_status_command(args) -> int:
    """`powersweep status JOB_ID --address http://...`: the job's state and the sweep it runs."""
    info = job_status(args.dir, address=args.address)
    if args.json:
        print_json(info)
        return 0
    meta = info["metadata"]
    print(
        f"job {info['job_id']}: {info['status']} (sweep {meta.get('sweep_id', '?')}, "
        f"storage {meta.get('storage', '?')})"
    )
    if info["message"]:
        print(f"  {info['message'].strip()}")
    return 0


def add_parsers(sub) -> None:
    """Register logs and stop (submit, resume and status take a Jobs API address themselves)."""
    add_logs_parser(sub)
    add_stop_parser(sub)


def add_logs_parser(sub) -> None:
    p = sub.add_parser("logs", help="the output of a sweep submitted to a cluster as a Ray job")
    p.add_argument("job_id", help="the id `powersweep submit --address http://...` printed")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=logs_command)


def logs_command(args) -> int:
    address = required_address(args.address)
    text = job_logs(args.job_id, address=address, follow=args.follow)
    if text is not None:
        print(text, end="")
    return 0


def add_stop_parser(sub) -> None:
    p = sub.add_parser(
        "stop", help="stop a sweep submitted to a cluster (stored rows stay; resume finishes it)"
    )
    p.add_argument("job_id", help="the id `powersweep submit --address http://...` printed")
    p.add_argument("--address", help=ADDRESS_HELP)
    add_json_option(p, "the job id and whether it was stopped")
    p.set_defaults(func=stop_command)


def stop_command(args) -> int:
    stopped = stop_job(args.job_id, address=required_address(args.address))
    if args.json:
        print_json({"job_id": args.job_id, "stopped": stopped})
    else:
        print(f"job {args.job_id}: {'stop requested' if stopped else 'had already ended'}")
    return 0
