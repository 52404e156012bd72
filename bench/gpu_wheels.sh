#!/usr/bin/env bash
# The wheels bench/gpu_smoke.py needs on a GPU machine that has no network (README: "The GPU check").
#
#   bash bench/gpu_wheels.sh              # here, where PyPI is reachable: the wheels into .whl/
#   bash bench/gpu_wheels.sh --install    # there, offline: install .whl/ into /tmp/site and check it
#   PYTHONPATH=/tmp/site python3 bench/gpu_smoke.py --json gpu_smoke.json
#
# The GPU machine is expected to have torch (a CUDA build), numpy, pandas, pillow, pyyaml, psutil,
# jinja2, tqdm, requests and pyarrow >= 24 (WITH_PYARROW=1 takes pyarrow along too, ~40 MB).
# Everything else the check imports travels: trl and datasets, and transformers, accelerate, peft
# and their helpers at the exact versions this project's CI tests (read from .venv, `make venv`),
# installed with --target so that they take precedence over older copies there.
# Wheels for CPython $PY_VERSION (default 3.12) on manylinux x86_64.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
PY_VERSION=${PY_VERSION:-3.12}
PACKAGES=(
  trl datasets dill multiprocess xxhash fsspec                          # not on the GPU machine
  transformers tokenizers safetensors regex kernels tomlkit              # transformers as CI tests it
  huggingface_hub hf-xet httpx2 httpcore2 truststore h11 idna anyio click typing_extensions
  accelerate peft                                                        # as CI tests them
  pydantic pydantic_core annotated_types typing_inspection               # curation's prompt constants
)
if [[ ${WITH_PYARROW:-0} == 1 ]]; then PACKAGES+=(pyarrow); fi

if [[ ${1:-} == --install ]]; then
  ls "$DEST"/*.whl > /dev/null || { echo "no wheels in $DEST: run bench/gpu_wheels.sh where PyPI is reachable" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$DEST"/*.whl
  PYTHONPATH=/tmp/site python3 -c "
import torch, pyarrow, trl, datasets, transformers
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| pyarrow', pyarrow.__version__,
      '| trl', trl.__version__, '| datasets', datasets.__version__, '| transformers', transformers.__version__)
assert int(pyarrow.__version__.split('.')[0]) >= 24, 'datasets needs pyarrow >= 24: rerun gpu_wheels.sh with WITH_PYARROW=1'
"
  exit 0
fi

PY=.venv/bin/python
[[ -x $PY ]] || { echo "no .venv: run \`make venv\` first (the versions are read from it)" >&2; exit 1; }
pins=()
for name in "${PACKAGES[@]}"; do
  pins+=("$name==$($PY -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")")
done
mkdir -p "$DEST"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${pins[@]}"
echo "$(ls "$DEST"/*.whl | wc -l) wheels in $DEST ($(du -sh "$DEST" | cut -f1)): ${pins[*]}"
