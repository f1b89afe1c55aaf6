#!/usr/bin/env bash
# Score every mammogram under a folder and keep a CSV; exit 1 from mammofuse means some files
# failed (listed in the CSV's error column) while the rest were scored.
# Usage: examples/score_folder.sh STUDIES_DIR OUT.csv [MODEL]
set -uo pipefail
studies=${1:?usage: score_folder.sh STUDIES_DIR OUT.csv [MODEL]}
out=${2:?usage: score_folder.sh STUDIES_DIR OUT.csv [MODEL]}
model=${3:-default}

mammofuse predict "$studies" --recursive --model "$model" --format csv --output "$out"
status=$?
case $status in
  0) echo "all files scored: $out" ;;
  1) echo "some files failed; see the error column of $out" >&2 ;;
  *) echo "usage error (status $status)" >&2 ;;
esac
exit $status
