#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes/ against the
# Kubernetes API's JSON schemas, offline, in strict mode (unknown fields are
# errors):
#
#   1. every manifest file as written (kustomization.yaml files excepted:
#      they are kustomize's input, checked by step 2), then
#   2. the output of `kustomize build` for the base and every overlay, when a
#      kustomize (standalone, or `kubectl kustomize`) is on the PATH.
#
# Custom resources (the monitoring component's ServiceMonitor, the
# PrometheusRule in deploy/monitoring/) are validated by
# deploy/monitoring/check-custom-resources.py against schemas written there
# for the fields tollgate uses (strict too); a kind that neither the
# Kubernetes schemas nor that script know is an error.
#
# The validator is kubernetes-validate from PyPI, which ships the schemas of
# each Kubernetes version inside the package; it is installed into a
# virtualenv under target/ on first use. Exit status: 0 when everything
# validates, 1 otherwise.
#
# Environment: KUBERNETES_VERSIONS (space-separated, default "1.30.0 1.37.0":
# the oldest version these manifests support -- the preStop `sleep` action --
# and the newest the validator knows), REQUIRE_KUSTOMIZE=1 to fail instead of
# skipping step 2 when no kustomize is found.
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR_VERSION=1.37.0
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.30.0 1.37.0"}
WORK=target/deploy-validate
VENV=$WORK/venv
ROOT=deploy/kubernetes

# --- the validator -----------------------------------------------------------
if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$VALIDATOR_VERSION" ]; then
  echo "validate: installing kubernetes-validate $VALIDATOR_VERSION into $VENV" >&2
  mkdir -p "$WORK"
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$VALIDATOR_VERSION"
fi
echo "validator: kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)" \
  "(strict), Kubernetes $KUBERNETES_VERSIONS"

failed=0
CR_CHECK=deploy/monitoring/check-custom-resources.py
# Kinds kubernetes-validate has no schema for, validated by $CR_CHECK instead.
CUSTOM_KINDS="ServiceMonitor PrometheusRule"
validate() { # FILE LABEL
  local file=$1 label=$2 version args=() out unknown
  for version in $KUBERNETES_VERSIONS; do args+=(-k "$version"); done
  if out=$("$VENV/bin/kubernetes-validate" --strict --quiet "${args[@]}" "$file" 2>&1); then
    # It only warns about a kind it has no schema for.
    unknown=$(grep -o "Couldn't find schema for kind [A-Za-z]*" <<<"$out" | awk '{print $NF}' | sort -u |
      grep -vxF -f <(tr ' ' '\n' <<<"$CUSTOM_KINDS") || true)
    if [ -n "$unknown" ]; then
      echo "FAILED  $label: no schema for kind(s) $unknown"
      failed=1
    elif ! crs=$("$VENV/bin/python" "$CR_CHECK" "$file"); then
      echo "$crs"
      echo "FAILED  $label (custom resources)"
      failed=1
    else
      echo "ok      $label${crs:+ ($(grep -c '^valid' <<<"$crs") custom resources, strict)}"
    fi
  else
    echo "$out"
    echo "FAILED  $label"
    failed=1
  fi
}

# --- 1. the files as written ---------------------------------------------------
mapfile -t manifests < <(
  {
    find "$ROOT" -name '*.yaml' ! -name kustomization.yaml
    find deploy/monitoring -name '*.yaml' ! -name kustomization.yaml
  } | sort
)
for file in "${manifests[@]}"; do
  validate "$file" "$file"
done

# --- 2. kustomize build ----------------------------------------------------------
if command -v kustomize >/dev/null 2>&1; then
  build=(kustomize build)
  kustomize_version=$(kustomize version 2>/dev/null | head -n1)
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  build=(kubectl kustomize)
  kustomize_version="kubectl kustomize, $(kubectl version --client 2>/dev/null | grep -i kustomize | head -n1)"
else
  build=()
fi

mapfile -t roots < <(find "$ROOT/base" "$ROOT/overlays" -name kustomization.yaml -exec dirname {} \; | sort)
if [ ${#build[@]} -eq 0 ]; then
  echo "SKIPPED kustomize build of ${roots[*]}: no kustomize or kubectl on the PATH"
  [ "${REQUIRE_KUSTOMIZE:-0}" = 1 ] && failed=1
else
  echo "kustomize: $kustomize_version"
  for dir in "${roots[@]}"; do
    out="$WORK/rendered/${dir#"$ROOT"/}.yaml"
    mkdir -p "$(dirname "$out")"
    if "${build[@]}" "$dir" >"$out"; then
      validate "$out" "${build[*]} $dir ($(grep -c '^kind:' "$out") resources)"
    else
      echo "FAILED  ${build[*]} $dir"
      failed=1
    fi
  done
fi

if [ "$failed" -eq 0 ]; then
  echo "validate: all manifests valid"
else
  echo "validate: some manifests are invalid" >&2
fi
exit "$failed"
