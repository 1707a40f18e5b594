#!/usr/bin/env bash
# The chain check of docs/results.md ("Which source the pages measure"): does the working tree's source train the
# thirteen check runs byte for byte as an older commit's source does? Each run is `msmt train` of the check world's
# config (`msmt synth advertiser --advertisers 40 --days 30 --seed 5`, train.epochs=2, one thread) with one setting
# each: M2M, MMoE, MMoE + Meta-SGD, M2M and the trailing mean with each point forecast, the offsets a forecast change
# touches, PLE with `last` and the other two naive forecasters. Every run file is compared with cmp; expected to
# differ: provenance.json and manifest.json (they name the source hash), and config.yaml / schema.json where a change
# adds a config key.
#
#   .ci/chain_check.sh OLD_COMMIT [WORK_DIR]      # about 3 min on 2 cores; prints "equal N differ M" last
set -euo pipefail
old=${1:?usage: .ci/chain_check.sh OLD_COMMIT [WORK_DIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$(mktemp -d)}
py=$repo/.venv/bin/python
rm -rf "$work/old_tree" "$work/old" "$work/new" "$work/data"
git -C "$repo" worktree add -q --detach "$work/old_tree" "$old"
trap 'git -C "$repo" worktree remove --force "$work/old_tree"' EXIT
PYTHONPATH=$repo/src "$py" -m msmt synth advertiser --out "$work/data" --advertisers 40 --days 30 --seed 5 > /dev/null
runs=(
  "m2m|model.name=m2m"
  "mmoe|model.name=mmoe"
  "mmoe_metasgd|model.name=mmoe meta.algorithm=metasgd meta.episodes=20"
  "m2m_scaled|model.name=m2m train.point_forecast=scaled"
  "m2m_median|model.name=m2m train.point_forecast=median"
  "naive_mean_scaled|model.name=naive_mean train.point_forecast=scaled"
  "naive_mean_median|model.name=naive_mean train.point_forecast=median"
  "m2m_blend|model.name=m2m model.forecast=blend"
  "m2m_mean|model.name=m2m model.forecast=mean"
  "mmoe_history_backtest|model.name=mmoe model.history_summary=true model.forecast=blend_backtest"
  "ple_last|model.name=ple model.forecast=last"
  "naive_last|model.name=naive_last"
  "naive_weekday|model.name=naive_weekday"
)
for side in old new; do
  src=$repo/src
  [ "$side" = old ] && src=$work/old_tree/src
  for run in "${runs[@]}"; do
    name=${run%%|*}
    args=()
    for setting in ${run#*|} train.epochs=2 train.num_threads=1; do args+=(--set "$setting"); done
    if ! PYTHONPATH=$src OMP_NUM_THREADS=1 "$py" -m msmt train "$work/data/experiment.yaml" --out "$work/$side/$name" --quiet \
        "${args[@]}" > "$work/$side.$name.log" 2>&1; then
      echo "the $side source failed to train $name: $work/$side.$name.log" >&2
      exit 1
    fi
  done
done
(cd "$work/old" && find . -type f | sort) > "$work/files.old"
(cd "$work/new" && find . -type f | sort) > "$work/files.new"
equal=0
differ=0
while IFS= read -r file; do
  if cmp -s "$work/old/$file" "$work/new/$file"; then
    equal=$((equal + 1))
  else
    differ=$((differ + 1))
    echo "differ $file"
  fi
done < "$work/files.old"
if ! diff "$work/files.old" "$work/files.new" > "$work/files.diff"; then
  echo "the two sides wrote different files (< old only, > new only):"
  grep '^[<>]' "$work/files.diff"
  differ=$((differ + $(grep -c '^[<>]' "$work/files.diff")))
fi
echo "equal $equal differ $differ"
