#!/usr/bin/env bash
# Install raykd's `cuda` extra (mamba-ssm, causal-conv1d: the Mamba kernels) on a GPU node from a wheelhouse, so
# that only the first node of a cluster ever builds them; cluster.yaml's worker_setup_commands run it.
#
#   cluster/cuda_extras.sh PROJECT_DIR [WHEELHOUSE]
#
# WHEELHOUSE (default $RAYKD_WHEELHOUSE, else ~/raykd-wheels; on a cluster, a folder on the shared EFS mount such
# as /mnt/raykd/wheels) holds one folder per torch build and Python version (the kernels are compiled against
# both). A node finds its wheels there and installs them in seconds; the first node to miss them builds them
# (`pip wheel --no-build-isolation`: the packages' own setup fetches their prebuilt release wheel where one
# matches this torch, CUDA and Python, and compiles from source otherwise, ~10-30 min) while holding a lock, so
# nodes starting together build once and the others wait for it. The requirements are the `cuda` extra of
# PROJECT_DIR/pyproject.toml, so this script never names a version of its own.
#
# PYTHON (default: python) is the environment's interpreter, PIP (default: "$PYTHON -m pip") its pip.
set -euo pipefail

project=${1:?usage: cuda_extras.sh PROJECT_DIR [WHEELHOUSE]}
wheelhouse=${2:-${RAYKD_WHEELHOUSE:-$HOME/raykd-wheels}}
python=${PYTHON:-python}
read -r -a pip <<< "${PIP:-$python -m pip}"

mapfile -t requirements < <("$python" - "$project/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["cuda"]))
PY
)
build=$("$python" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')
dir="$wheelhouse/$build"
mkdir -p "$dir"

install_from_wheelhouse() {  # quietly where a miss is expected: "quiet"
    if [[ ${1:-} == quiet ]]; then
        "${pip[@]}" install --quiet --no-index --find-links "$dir" --no-deps "${requirements[@]}" >/dev/null 2>&1
    else
        "${pip[@]}" install --no-index --find-links "$dir" --no-deps "${requirements[@]}"
    fi
}

if install_from_wheelhouse quiet; then
    echo "cuda_extras: installed ${requirements[*]} from $dir"
    exit 0
fi
(
    flock -w 7200 9 || { echo "cuda_extras: gave up waiting for the build lock $dir/.lock" >&2; exit 1; }
    if install_from_wheelhouse quiet; then  # another node built them while this one waited
        echo "cuda_extras: installed ${requirements[*]} from $dir (built by another node)"
        exit 0
    fi
    echo "cuda_extras: building ${requirements[*]} for $build into $dir (once per cluster)"
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    "${pip[@]}" wheel --no-build-isolation --no-deps --wheel-dir "$tmp" "${requirements[@]}"
    mv "$tmp"/*.whl "$dir"/  # whole wheels only: a build that failed leaves nothing for the next node to trust
    rmdir "$tmp"
    install_from_wheelhouse
    echo "cuda_extras: built and installed ${requirements[*]}"
) 9>"$dir/.lock"
