#!/bin/bash
# The last job of a submission (pipelines/slurm/submit.sh): commit the stages whose array
# task exited 0 (status file written by stage.sbatch), name every other one (failed, cancelled, or
# never started: no status file), then build the report only when all succeeded. A failed stage is
# never committed, so `dvc status` keeps showing it and a rerun (`dvc repro` or another submission)
# runs it again; an interrupted training resumes from its last.pt.
#   record.sh TRAIN.tsv EVALUATE.tsv      (MSGNN_SLURM_AFTER: what runs once all succeeded)
set -uo pipefail
cd "${MSGNN_REPO:-${SLURM_SUBMIT_DIR:-.}}"
[ -f .venv/bin/activate ] && source .venv/bin/activate
status=.dvc/tmp/slurm/status
ok=(); bad=()
while IFS=$'\t' read -r name _; do
  [ -n "$name" ] || continue
  code=$(cat "$status/$name" 2>/dev/null || echo "none (cancelled or never ran)")
  if [ "$code" = 0 ]; then ok+=("$name"); else bad+=("$name: exit $code"); fi
done < <(cat "$@")
if [ ${#ok[@]} -gt 0 ]; then
  # `dvc commit -f` of them all with one dvc.lock write (the CLI rewrites the whole lock per stage)
  msgnn-bench grid --commit "${ok[@]}" || { echo "record: commit failed" >&2; exit 1; }
  echo "record: committed ${#ok[@]} stage(s): ${ok[*]}"
fi
if [ ${#bad[@]} -gt 0 ]; then
  printf 'record: FAILED, not committed: %s\n' "${bad[@]}" >&2
  echo "record: logs in slurm-<job>_<task>.out; rerun the failed stages (a training resumes from last.pt)" >&2
  exit 1
fi
bash -c "${MSGNN_SLURM_AFTER:-dvc repro report && dvc status}"
