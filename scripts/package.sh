#!/usr/bin/env bash
# Build the deployable Lambda zip and the final SAM template (what `make package` runs).
#
#   scripts/package.sh [--check] [--no-lint]
#   scripts/package.sh --find-python    print the Python 3.12 that packages; exit 3 if none
#
# The Lambda's runtime is the Python that runs `chalice package`, and the wheels in the zip
# are built for it: packaging therefore runs under Python 3.12 (Lambda's python3.12 runtime),
# from its own venv .venv-package, whatever Python the development venv uses.
#
# 0. finds Python 3.12: $CERTFLEET_PACKAGE_PYTHON when set, else python3.12 on PATH, else
#    ~/.pyenv/versions/3.12*; makes .venv-package with it when absent or older than
#    pyproject.toml / lambda/requirements.txt (pip install -e '.[lambda,acme]' plus the
#    pins of lambda/requirements.txt: what importing lambda/app.py needs). No Python 3.12:
#    exit 3 and say so;
# 1. copies lambda/ (following the vendor/certfleet symlink, without __pycache__) to
#    build/chalice/, so the zip holds sources only and Chalice's dependency cache is keyed on
#    them alone. The test tooling, the package certfleet/sandbox/ (the APIv3 test double,
#    devstack.py, tamper.py), is left out: the Lambda never imports it;
# 2. `chalice package --merge-template infra/sam/stack.yaml` writes deployment.zip and
#    sam.yaml to $CERTFLEET_BUILD_DIR (default build/package); Chalice fetches Lambda
#    (manylinux, cp312) wheels of lambda/requirements.txt from PyPI, nothing else leaves the
#    machine. It then reads the zip's file list and fails if any file of the test tooling
#    is in it;
# 3. writes template.yaml: sam.yaml with CodeUri build/package/deployment.zip, sections in
#    the usual order. `--check` writes nothing and fails if template.yaml is out of date;
# 4. runs cfn-lint on template.yaml and infra/sam/node-policy.yaml, from .venv-lint (made
#    here with `python3 -m venv .venv-lint && .venv-lint/bin/pip install cfn-lint` when
#    absent). `--no-lint` skips it.
#
# Deploy: sam deploy -t template.yaml --stack-name certfleet --resolve-s3 \
#           --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM   (see infra/sam/README.md)
set -euo pipefail

cd "$(dirname "$0")/.."
check=0
lint=1
find_only=0
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        --no-lint) lint=0 ;;
        --find-python) find_only=1 ;;
        *) echo "usage: scripts/package.sh [--check] [--no-lint] | --find-python" >&2; exit 2 ;;
    esac
done

venv=.venv-package
out="${CERTFLEET_BUILD_DIR:-build/package}"
stage=build/chalice
# Left out of the zip: the test tooling, one package (test doubles and dev tooling).
test_tooling=certfleet/sandbox
# Packaging needs a region, never credentials.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

is_312() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1
}

# Prints the real path of a Python 3.12 (a pyenv shim that has no 3.12 selected fails the
# version check and is passed over).
find_python() {
    local candidates candidate
    if [[ -n "${CERTFLEET_PACKAGE_PYTHON:-}" ]]; then
        candidates=("$CERTFLEET_PACKAGE_PYTHON")
    else
        candidates=(python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12
                    /root/.pyenv/versions/3.12*/bin/python3.12)
    fi
    for candidate in "${candidates[@]}"; do
        if command -v "$candidate" >/dev/null 2>&1 && is_312 "$candidate"; then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    echo "package: Python 3.12 not found (tried ${candidates[*]}): the Lambda runs" \
        "python3.12 and its zip is built for it. Install it (e.g. pyenv install 3.12)" \
        "or set CERTFLEET_PACKAGE_PYTHON" >&2
    return 3
}

if [[ "$find_only" == 1 ]]; then
    find_python
    exit
fi

if [[ ! -f "$venv/.installed" || pyproject.toml -nt "$venv/.installed" \
        || lambda/requirements.txt -nt "$venv/.installed" ]] || ! is_312 "$venv/bin/python"; then
    python="$(find_python)" || exit 3
    "$python" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -e '.[lambda,acme]' -r lambda/requirements.txt
    touch "$venv/.installed"
fi

# The staging copy keeps .chalice/deployments (Chalice's wheel cache) between runs.
mkdir -p "$stage"
find "$stage" -mindepth 1 -maxdepth 1 ! -name .chalice -exec rm -rf {} +
rm -f "$stage/.chalice/config.json"
cp -rL lambda/. "$stage/"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "${stage:?}/vendor/$test_tooling"

rm -rf "$out"
mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
(
    cd "$stage"
    "../../$venv/bin/chalice" package --stage prod --pkg-format cloudformation \
        --template-format yaml --merge-template ../../infra/sam/stack.yaml "$out_abs"
)

leaked="$("$venv/bin/python" -c 'import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(n for n in names if n.startswith(sys.argv[2] + "/")))' \
    "$out/deployment.zip" "$test_tooling")"
if [[ -n "$leaked" ]]; then
    echo "package: the zip holds test tooling: $leaked" >&2
    exit 1
fi

"$venv/bin/python" - "$out/sam.yaml" "$out/template.yaml" <<'EOF'
import sys

import yaml

source, target = sys.argv[1:]
with open(source, encoding="utf-8") as f:
    template = yaml.safe_load(f)
for resource in template["Resources"].values():  # Sync and Http: the one zip
    if resource.get("Properties", {}).get("CodeUri") == "./deployment.zip":
        resource["Properties"]["CodeUri"] = "build/package/deployment.zip"
order = ["AWSTemplateFormatVersion", "Transform", "Description", "Parameters", "Conditions",
         "Resources", "Outputs"]
ordered = {key: template[key] for key in order if key in template}
ordered.update((key, value) for key, value in template.items() if key not in ordered)
header = (
    "# Generated by scripts/package.sh (make package) from lambda/ and infra/sam/stack.yaml:\n"
    "# edit those, not this file. CodeUri is the zip that make package builds.\n"
)
with open(target, "w", encoding="utf-8") as f:
    f.write(header + yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100))
EOF

if [[ "$check" == 1 ]]; then
    if ! cmp -s "$out/template.yaml" template.yaml; then
        diff -u template.yaml "$out/template.yaml" >&2 || true
        echo "package: template.yaml is out of date: run make package and commit it" >&2
        exit 1
    fi
else
    cp "$out/template.yaml" template.yaml
fi

if [[ "$lint" == 1 ]]; then
    if [[ ! -x .venv-lint/bin/cfn-lint ]]; then
        python3 -m venv .venv-lint
        .venv-lint/bin/pip install -q --disable-pip-version-check cfn-lint
    fi
    .venv-lint/bin/cfn-lint "$out/template.yaml" infra/sam/node-policy.yaml
fi
echo "package: $out/deployment.zip, template.yaml"
