#!/usr/bin/env bash
# Generates Python, gRPC stubs and mypy stubs for proto/ into gen/ (importable as smm.v1),
# and copies the googleapis protos buf needs from the installed wheel into third_party/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SITE=$($PY -c "import site; print(site.getsitepackages()[0])")

rm -rf third_party/googleapis && mkdir -p third_party/googleapis/google/api
cp "$SITE"/google/api/{annotations,http,field_behavior,httpbody}.proto third_party/googleapis/google/api/

rm -rf gen && mkdir -p gen
$PY -m grpc_tools.protoc -I proto -I "$SITE" \
  --python_out=gen --grpc_python_out=gen \
  --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --mypy_out=gen \
  --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc --mypy_grpc_out=gen \
  $(find proto -name '*.proto' | sort)
for d in gen/smm gen/smm/v1; do : > "$d/__init__.py"; done
: > gen/smm/py.typed
echo "generated $(ls gen/smm/v1/*_pb2.py | wc -l) proto modules into gen/"
