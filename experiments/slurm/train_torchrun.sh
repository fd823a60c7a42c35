#!/bin/bash
# The same DDP training without SLURM: torchrun starts one process per GPU and Lightning reads
# its environment (RANK, WORLD_SIZE, MASTER_ADDR).
#   One node, 8 GPUs:  GPUS=8 experiments/slurm/train_torchrun.sh
#   Two nodes: on each, NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0> GPUS=8 experiments/slurm/train_torchrun.sh
set -euo pipefail
CONFIG=${CONFIG:-experiments/places_sd.yaml}
RUN=${RUN:-places}
GPUS=${GPUS:-8}
NNODES=${NNODES:-1}
export OMP_NUM_THREADS=1

torchrun --nnodes "${NNODES}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "${GPUS}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m dcgd fit --config ${CONFIG} \
  --trainer.strategy ddp --trainer.num_nodes "${NNODES}" --trainer.devices "${GPUS}" \
  --trainer.default_root_dir "runs/${RUN}"
