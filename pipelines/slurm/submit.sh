#!/bin/bash
# Submit the whole grid to SLURM: a train array, an evaluate array after it, then a job that
# records every result in dvc.lock and builds the report. Run from the repository root on a login
# node with the repository on a filesystem all nodes share, after `dvc repro prepare`.
#   pipelines/slurm/submit.sh [extra sbatch options, e.g. --partition=gpu --account=xyz]
set -euo pipefail
dir=.dvc/tmp/slurm
mkdir -p "$dir"
msgnn-bench grid --list 'train*' > "$dir/train.tsv"
msgnn-bench grid --list 'evaluate*' > "$dir/evaluate.tsv"
n_train=$(wc -l < "$dir/train.tsv"); n_eval=$(wc -l < "$dir/evaluate.tsv")
a=$(sbatch --parsable "$@" --array=0-$((n_train - 1)) pipelines/slurm/stage.sbatch "$dir/train.tsv")
b=$(sbatch --parsable "$@" --dependency=afterok:$a --array=0-$((n_eval - 1)) pipelines/slurm/stage.sbatch "$dir/evaluate.tsv")
stages=$(cut -f1 "$dir/train.tsv" "$dir/evaluate.tsv" | tr '\n' ' ')
c=$(sbatch --parsable "$@" --dependency=afterok:$b --gres=gpu:0 --job-name=msgnn-record \
     --wrap "source .venv/bin/activate 2>/dev/null; dvc commit -f $stages && dvc repro report && dvc status")
echo "submitted: train array $a ($n_train tasks), evaluate array $b ($n_eval), record $c"
