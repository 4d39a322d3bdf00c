#!/bin/sh
# mlgate traffic hook for KServe: moves an InferenceService's canaryTrafficPercent.
#
#   traffic:
#     backend: command
#     command: {run: "sh deploy/kserve-canary.sh fraud-detection models", timeout_s: 300}
#
# mlgate runs it as `sh deploy/kserve-canary.sh NAME NAMESPACE STABLE CANARY MIRROR` (e.g. `... 75 25 off`),
# with the same values in MLGATE_STABLE_WEIGHT, MLGATE_CANARY_WEIGHT and MLGATE_MIRROR. KServe sends
# canaryTrafficPercent of the requests to the InferenceService's latest ready revision (the canary) and the
# rest to the one before it (stable). Patching the same value twice changes nothing, as mlgate requires.
set -eu
name="$1"
namespace="$2"
canary="${MLGATE_CANARY_WEIGHT:?run this through mlgate traffic set}"
if [ "${MLGATE_MIRROR:-off}" = on ]; then
  echo "KServe's InferenceService has no request mirroring; shadow with an Istio VirtualService mirror instead" >&2
  exit 3
fi
kubectl patch inferenceservice "$name" --namespace "$namespace" --type merge \
  -p "{\"spec\":{\"predictor\":{\"canaryTrafficPercent\":$canary}}}"
# Return once KServe has rolled the split out, so the next rollout step measures the new weights.
kubectl wait --for=condition=Ready "inferenceservice/$name" --namespace "$namespace" --timeout=240s
