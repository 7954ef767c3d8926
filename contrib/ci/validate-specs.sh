#!/bin/sh
# validate-specs.sh: check every haconn cluster spec under a folder, for any CI.
#
#   usage: validate-specs.sh [DIR]        (DIR defaults to the current folder)
#
# Finds *.yaml and *.yml under DIR (skipping .git), checks them all with one
# `haconn validate` run and exits with its status: 0 all valid, 1 a spec is
# invalid, 2 a file could not be read or haconn could not run. Point DIR at the
# folder that holds only cluster specs: any other YAML there would be checked
# as a spec too.
#
# Environment:
#   HACONN          the haconn binary (default: `haconn` from PATH)
#   HACONN_FORMAT   `text` (default, FILE:LINE:COL lines) or `json` (one report)
#   HACONN_FLAGS    extra flags (default: --deny-inline-secrets; set it to
#                   an empty value to accept inline secrets, or add
#                   --resolve-secrets where the secrets are readable)
#
# File names containing a newline are not supported.

set -u

dir=${1:-.}
haconn=${HACONN:-haconn}
format=${HACONN_FORMAT:-text}
flags=${HACONN_FLAGS---deny-inline-secrets}

if [ $# -gt 1 ]; then
    echo "usage: $0 [DIR]" >&2
    exit 2
fi
if [ ! -d "$dir" ]; then
    echo "$0: $dir is not a directory" >&2
    exit 2
fi
if ! command -v "$haconn" >/dev/null 2>&1; then
    echo "$0: haconn not found (set HACONN to its path)" >&2
    exit 2
fi

# Collect the spec files as positional parameters, sorted for a stable report.
specs=$(find "$dir" -name .git -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print | LC_ALL=C sort)
if [ -z "$specs" ]; then
    echo "$0: no *.yaml or *.yml files under $dir" >&2
    exit 2
fi
set --
while IFS= read -r spec; do
    set -- "$@" "$spec"
done <<EOF
$specs
EOF

# $flags is split on purpose: it holds zero or more separate flags.
# shellcheck disable=SC2086
"$haconn" validate --format "$format" $flags "$@"
status=$?
if [ "$status" -ne 0 ] && [ "$format" = text ]; then
    echo "$0: $# spec file(s) checked; haconn validate exited with $status" >&2
fi
exit "$status"
