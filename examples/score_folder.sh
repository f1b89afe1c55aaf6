#!/usr/bin/env bash
# Score every mammogram under a folder and keep a CSV; exit 1 from mammofuse means some files
# failed (listed in the CSV's error column) while the rest were scored.
# FINDINGS.csv gives each file's clinical findings and, optionally, its lesion circle (columns
# path, density, shape, margin, ..., roi_row, roi_col, roi_radius; see `mammofuse predict --help`).
# The bundled default looks at lesion crops: a file with neither a circle nor a finding fails with
# "nothing to score".
# Its exit status is mammofuse's (see the README): 0 all scored, 1 some files failed, 2 usage
# error (also for wrong arguments to this script), 3 OUT.csv cannot be written, 4 a bug in mammofuse.
# Usage: examples/score_folder.sh STUDIES_DIR OUT.csv [MODEL] [FINDINGS.csv]
set -uo pipefail
if [ $# -lt 2 ] || [ $# -gt 4 ]; then
  echo "usage: score_folder.sh STUDIES_DIR OUT.csv [MODEL] [FINDINGS.csv]" >&2
  exit 2
fi
studies=$1
out=$2
model=${3:-default}
findings=()
[ -n "${4:-}" ] && findings=(--clinical "$4")

# ${a[@]+"${a[@]}"}: an empty array is "unbound" under set -u in bash before 4.4 (macOS's /bin/bash is 3.2)
mammofuse predict "$studies" --recursive --model "$model" ${findings[@]+"${findings[@]}"} --format csv --output "$out"
status=$?
case $status in
  0) echo "all files scored: $out" ;;
  1) echo "some files failed; see the error column of $out" >&2 ;;
  2) echo "usage error; see the message above" >&2 ;;
  3) echo "cannot write $out; see the message above" >&2 ;;
  4) echo "internal error in mammofuse; MAMMOFUSE_DEBUG=1 shows the traceback, please report it" >&2 ;;
  *) echo "mammofuse stopped (status $status)" >&2 ;;
esac
exit $status
