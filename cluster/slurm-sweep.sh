#!/usr/bin/env bash
# Run a sweep on a SLURM allocation: a Ray head on the first node, a Ray worker on each other node,
# the sweep driver in this batch step on the first node, every Ray process stopped when it ends.
#   sbatch cluster/slurm-sweep.sh SPEC STORAGE
# STORAGE must be visible to every node: a shared filesystem path (absolute) or an object store URI.
# The venv (POWERSWEEP_VENV, default ./.venv, made by `make test` or `make demo`) must be on a shared
# filesystem too; it pins torch==2.13.0.
#SBATCH --job-name=powersweep
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=powersweep-%j.log
set -euo pipefail

spec=${1:?usage: sbatch cluster/slurm-sweep.sh SPEC STORAGE}
storage=${2:?usage: sbatch cluster/slurm-sweep.sh SPEC STORAGE}
venv=${POWERSWEEP_VENV:-$PWD/.venv}
port=${RAY_PORT:-6379}
dashboard_port=${RAY_DASHBOARD_PORT:-8265}
cpus=${SLURM_CPUS_PER_TASK:-1}
gpus=${SLURM_GPUS_PER_TASK:-0}

# One token per allocation, inherited by every srun step: every node and the driver use it.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))')}
export RAY_AUTH_TOKEN
export PATH="$venv/bin:$PATH"

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')

steps=()
stop_ray() {
  # The srun steps this script started, by pid; SLURM ends the rest with the allocation.
  if ((${#steps[@]})); then kill "${steps[@]}" 2>/dev/null || true; fi
  wait || true
}
trap stop_ray EXIT

srun --nodes=1 --ntasks=1 --overlap -w "$head" \
  ray start --head --block --node-ip-address="$head_ip" --port="$port" --num-cpus="$cpus" --num-gpus="$gpus" \
  --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" &
steps+=("$!")

for _ in $(seq 60); do
  if ray status --address="$head_ip:$port" >/dev/null 2>&1; then break; fi
  sleep 2
done
ray status --address="$head_ip:$port" >/dev/null

for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 --overlap -w "$node" \
    ray start --block --address="$head_ip:$port" --num-cpus="$cpus" --num-gpus="$gpus" &
  steps+=("$!")
done

# Wait for every node, so that the driver's storage check probes them all.
python - "$head_ip:$port" "${#nodes[@]}" <<'PY'
import sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 600
while (alive := sum(node["Alive"] for node in ray.nodes())) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit(f"only {alive} of {sys.argv[2]} Ray nodes joined within 600 s: see powersweep-*.log")
    time.sleep(2)
PY

echo "dashboard: ssh -L $dashboard_port:127.0.0.1:$dashboard_port $head (then http://127.0.0.1:$dashboard_port)"
# The driver runs here, on the head node, connected straight to the allocation's cluster.
powersweep submit "$spec" --storage "$storage" --address "$head_ip:$port"
