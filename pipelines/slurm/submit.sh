#!/bin/bash
# Submit the whole grid to SLURM: a train array, an evaluate array after it, then a job that
# records every result in dvc.lock and builds the report. Run from the repository root on a login
# node with the repository on a filesystem all nodes share, after `dvc repro prepare`.
#   pipelines/slurm/submit.sh [extra sbatch options, e.g. --partition=gpu --account=xyz]
# Options given here override the #SBATCH lines of stage.sbatch (a CPU-only node:
# --gres=none --cpus-per-task=1 --mem=2G). Which stages (globs, space-separated):
#   MSGNN_SLURM_TRAIN (default 'train*'), MSGNN_SLURM_EVALUATE (default 'evaluate*').
# The chain uses afterany, not afterok: with afterok one failed task leaves every later job pending
# forever (DependencyNeverSatisfied) and nothing is recorded. Instead every task writes its exit
# status to .dvc/tmp/slurm/status/<stage>, and the record job (record.sh) commits exactly the stages
# that succeeded, names the failed or cancelled ones and exits 1 if there are any.
set -euo pipefail
dir=.dvc/tmp/slurm
mkdir -p "$dir"
rm -rf "$dir/status"   # statuses of an earlier submission must not count for this one
mkdir -p "$dir/status"
# shellcheck disable=SC2086  # the globs are words on purpose; grid expands them against dvc.yaml
msgnn-bench grid --list ${MSGNN_SLURM_TRAIN:-'train*'} > "$dir/train.tsv"
# shellcheck disable=SC2086
msgnn-bench grid --list ${MSGNN_SLURM_EVALUATE:-'evaluate*'} > "$dir/evaluate.tsv"
n_train=$(wc -l < "$dir/train.tsv"); n_eval=$(wc -l < "$dir/evaluate.tsv")
a=$(sbatch --parsable "$@" --array=0-$((n_train - 1)) pipelines/slurm/stage.sbatch "$dir/train.tsv")
b=$(sbatch --parsable "$@" --dependency=afterany:$a --array=0-$((n_eval - 1)) pipelines/slurm/stage.sbatch "$dir/evaluate.tsv")
c=$(sbatch --parsable "$@" --dependency=afterany:$b --gres=none --cpus-per-task=1 --job-name=msgnn-record \
     --output="slurm-%j.out" pipelines/slurm/record.sh "$dir/train.tsv" "$dir/evaluate.tsv")
echo "submitted: train array $a ($n_train tasks), evaluate array $b ($n_eval), record $c"
