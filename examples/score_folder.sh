#!/usr/bin/env bash
# Score every mammogram under a folder and keep a CSV; exit 1 from mammofuse means some files
# failed (listed in the CSV's error column) while the rest were scored.
# FINDINGS.csv gives each file's clinical findings and, optionally, its lesion circle (columns
# path, density, shape, margin, ..., roi_row, roi_col, roi_radius; see `mammofuse predict --help`).
# The bundled default looks at lesion crops: a file with neither a circle nor a finding fails with
# "nothing to score".
# Usage: examples/score_folder.sh STUDIES_DIR OUT.csv [MODEL] [FINDINGS.csv]
set -uo pipefail
usage="usage: score_folder.sh STUDIES_DIR OUT.csv [MODEL] [FINDINGS.csv]"
studies=${1:?$usage}
out=${2:?$usage}
model=${3:-default}
findings=()
[ -n "${4:-}" ] && findings=(--clinical "$4")

mammofuse predict "$studies" --recursive --model "$model" "${findings[@]}" --format csv --output "$out"
status=$?
case $status in
  0) echo "all files scored: $out" ;;
  1) echo "some files failed; see the error column of $out" >&2 ;;
  *) echo "usage error (status $status)" >&2 ;;
esac
exit $status
