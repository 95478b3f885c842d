"""The sweep driver of a job submitted with `powersweep submit SPEC --address http://HOST:8265`.

It runs on the head node in the job's working directory (the uploaded project) and connects to the
cluster the job runs on: the Jobs API sets RAY_ADDRESS for it, so a `ray start` cluster elsewhere on
the node is never picked up by accident. It reports as `powersweep submit` does (`sweeps.outcome`).
"""

from __future__ import annotations

import json
import os
import sys

from powersweep.cluster.jobs import REPLACE_ENV, SPEC_ENV, STORAGE_ENV, ClusterError
from powersweep.cluster.nodes import check_nodes
from powersweep.sweeps.interrupt import SweepInterrupted, interruptible, resume_hint
from powersweep.sweeps.outcome import error_line, is_user_error, print_report
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.sweep import submit


def main() -> int:
    """Run what the store lacks of the job's spec on this cluster; exit 2 on a user error, 1 on failed trials,
    143 when stopped (`powersweep stop` sends SIGTERM), after one line naming the command that finishes the
    sweep."""
    try:
        spec, storage = spec_from_dict(json.loads(os.environ[SPEC_ENV])), os.environ[STORAGE_ENV]
        # Resumed from where the job was submitted: through the cluster's Jobs API, whose address this driver
        # does not know.
        hint = resume_hint(storage, sweep_id=spec.name, address="http://HEAD:8265")
        with interruptible(program="powersweep driver", resume=hint):
            result = submit(
                spec,
                storage=storage,
                address=os.environ.get("RAY_ADDRESS") or "auto",
                check_nodes=check_nodes,
                replace_sweep=os.environ.get(REPLACE_ENV) == "1",
            )
    except SweepInterrupted as stop:  # its line is printed
        return stop.exit_code
    except Exception as err:
        if not (isinstance(err, ClusterError) or is_user_error(err)):
            raise
        print(error_line("powersweep driver", err), file=sys.stderr, flush=True)
        return 2
    return print_report(result)


if __name__ == "__main__":
    sys.exit(main())
