#!/bin/sh
# A sample `command` traffic hook, for the contract test: it records what mlgate handed it in the file named by
# its first argument (mlgate.yaml: `run: "sh record_weights.sh RECORD"`), then says what it applied.
set -eu
record="$1"
shift
{
  echo "argv=$*"
  echo "stable=$MLGATE_STABLE_WEIGHT"
  echo "canary=$MLGATE_CANARY_WEIGHT"
  echo "mirror=$MLGATE_MIRROR"
  echo "cwd=$(pwd)"
} >>"$record"
echo "router now sends $MLGATE_CANARY_WEIGHT% to the canary"
