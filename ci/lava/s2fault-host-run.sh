#!/bin/sh
# Run `s2fault host-run` once per workload and report each as a LAVA test case
# (lava-test-case in a LAVA job; lines "NAME RESULT" in OUTPUT/result.txt elsewhere).
#   s2fault-host-run.sh [-w "WORKLOADS"] [-v VCPUS] [-r ROUNDS] [-o OUTPUT]
# Outcomes map as in every s2fault report: pass, fail, skip (DIC=1, no hugepage
# memory), and unknown for "could not judge" (never a pass).
set -u
WORKLOADS="exec-fault"
VCPUS=8
ROUNDS=5
OUTPUT=./output
S2FAULT=${S2FAULT:-s2fault}

while getopts "w:v:r:o:" opt; do
	case "$opt" in
	w) WORKLOADS=$OPTARG ;;
	v) VCPUS=$OPTARG ;;
	r) ROUNDS=$OPTARG ;;
	o) OUTPUT=$OPTARG ;;
	*) echo "usage: $0 [-w WORKLOADS] [-v VCPUS] [-r ROUNDS] [-o OUTPUT]" >&2; exit 2 ;;
	esac
done
mkdir -p "$OUTPUT"
: > "$OUTPUT/result.txt"

report() { # NAME RESULT [MEASUREMENT]
	if command -v lava-test-case >/dev/null 2>&1; then
		if [ -n "${3:-}" ]; then
			lava-test-case "$1" --result "$2" --measurement "$3" --units ms
		else
			lava-test-case "$1" --result "$2"
		fi
	fi
	echo "$1 $2${3:+ $3 ms}" >> "$OUTPUT/result.txt"
}

for w in $WORKLOADS; do
	name="host.$w.host-run"
	json="$OUTPUT/$w.json"
	rm -f "$json"
	"$S2FAULT" host-run --workload "$w" --vcpus "$VCPUS" --rounds "$ROUNDS" \
		--json "$json" --junit "$OUTPUT/$w.junit.xml" --ktap "$OUTPUT/$w.ktap" \
		--results "$OUTPUT/runs" 2> "$OUTPUT/$w.stderr"
	code=$?
	cat "$OUTPUT/$w.stderr" >&2
	case "$code" in
	0) result=pass ;;
	1) result=fail ;;
	4) result=skip ;;
	*) result=unknown ;;
	esac
	ms=""
	if [ -f "$json" ]; then
		ms=$(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["workload"].get("exec_fault_ms") or {}
print("" if m.get("max") is None else m["max"])' "$json" 2>/dev/null || true)
	fi
	report "$name" "$result" "$ms"
done
# The job goes on to the next test definition whatever happened; results carry it.
exit 0
