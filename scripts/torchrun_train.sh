#!/usr/bin/env bash
# Train one recipe on several processes and machines with torchrun (Lightning's DDP).
#
# usage: scripts/torchrun_train.sh RECIPE.yaml [section.field=value ...] [--resume]
#
# Run the same command on every machine; only NODE_RANK differs. Environment:
#   NNODES          machines taking part                               (default 1)
#   NODE_RANK       this machine's index, 0..NNODES-1                  (default 0)
#   NPROC_PER_NODE  processes on this machine, one per GPU             (default: the GPU count)
#   MASTER_ADDR     address of the NODE_RANK=0 machine                 (default 127.0.0.1)
#   MASTER_PORT     a free TCP port on it                              (default 29500)
#   ACCELERATOR     gpu or cpu (cpu: Gloo instead of NCCL)             (default gpu)
#   STRATEGY        ddp, fsdp, ... (trainer.strategy)                  (default ddp)
#   RUN_DIR         the run folder, on a disk every machine sees       (default runs/<recipe>)
#
# Global rank 0 alone writes RUN_DIR (recipe, history, checkpoints, model/, metrics); every
# process reads the checkpoint from it on --resume and the exported model for the final
# evaluation, so it must be one shared folder (NFS, Lustre, ...), not a local path per machine.
# The batch size in the recipe is per process: the global batch is it times the process count.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,19p' "$0"
  exit 2
fi
RECIPE="$1"
shift
if [[ ! -f "$RECIPE" ]]; then
  echo "torchrun_train.sh: recipe '$RECIPE' not found" >&2
  exit 2
fi

PYTHON="${PYTHON:-python}"
ACCELERATOR="${ACCELERATOR:-gpu}"
if [[ "$ACCELERATOR" != gpu && "$ACCELERATOR" != cpu ]]; then
  echo "torchrun_train.sh: ACCELERATOR must be gpu or cpu, got '$ACCELERATOR'" >&2
  exit 2
fi
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
  NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
  if [[ "$NPROC_PER_NODE" -lt 1 ]]; then
    echo "torchrun_train.sh: no GPU found; set NPROC_PER_NODE (and ACCELERATOR=cpu)" >&2
    exit 2
  fi
fi
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
STRATEGY="${STRATEGY:-ddp}"
RUN_DIR="${RUN_DIR:-runs/$(basename "${RECIPE%.*}")}"

echo "torchrun: node $NODE_RANK of $NNODES, $NPROC_PER_NODE process(es) here ($ACCELERATOR)," \
     "rendezvous $MASTER_ADDR:$MASTER_PORT, run folder $RUN_DIR" >&2
# OMP_NUM_THREADS: torchrun would set 1 thread per process; seglab picks its own default
# (physical cores) unless the user set one, so share the cores between the local processes.
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  cores=$("$PYTHON" -c "import os; print(os.cpu_count() or 1)")
  export OMP_NUM_THREADS=$(( cores / NPROC_PER_NODE > 0 ? cores / NPROC_PER_NODE : 1 ))
fi
exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "$NPROC_PER_NODE" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
  -m seglab train "$RECIPE" \
  "trainer.accelerator=$ACCELERATOR" "trainer.devices=$NPROC_PER_NODE" \
  "trainer.num_nodes=$NNODES" "trainer.strategy=$STRATEGY" \
  --run-dir "$RUN_DIR" "$@"
