#!/bin/bash
# CUDA 13 from PyPI wheels as CUDA_HOME on Debian bookworm-slim, without a GPU: torch 2.11.0 with
# cuda-toolkit[nvcc,nvvm,crt,cccl]==13.0.2 (the toolkit release torch 2.11.0 depends on), laid out as
# templates/partials/toolkit.j2 lays it out (lib64 -> lib, unversioned library names); nvcc compiles
# and links a CUDA program using CUB; torch's cpp_extension finds CUDA_HOME; DeepSpeed 0.18.9's
# fused_adam op is built for the 2026.11 arch list (8.0;8.6;9.0;10.0;12.0) with MAX_JOBS=2, timed.
# Run it in a throwaway container of the debian:bookworm-slim stand-in, with host networking and the
# host's CA bundle (this machine's TLS proxy):
#   docker run --rm --network host -v /etc/ssl/certs/ca-certificates.crt:/ca.crt:ro \
#     -v "$PWD/bench:/exp" debian:bookworm-slim bash /exp/cuda_wheels_toolchain.sh
# Result of 2026-12-06 (2 shared cores): bench/results/cuda-wheels-toolchain-2026-12-06.md.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive PIP_CERT=/ca.crt SSL_CERT_FILE=/ca.crt REQUESTS_CA_BUNDLE=/ca.crt
cat > /etc/apt/apt.conf.d/99ca <<<'Acquire::https::CAInfo "/ca.crt";'
apt-get update -qq && apt-get install -y -qq --no-install-recommends build-essential python3 python3-dev python3-venv libaio-dev ca-certificates >/dev/null
python3 -m venv /opt/venv && . /opt/venv/bin/activate
pip install -q --no-cache-dir uv==0.13.9 wheel==0.45.1 setuptools==80.9.0
uv pip install -q --no-cache torch==2.11.0 'cuda-toolkit[nvcc,nvvm,crt,cccl]==13.0.2' ninja==1.13.0 pydantic einops msgpack hjson py-cpuinfo psutil packaging numpy 2>&1 | tail -3
SP=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export CUDA_HOME=$SP/nvidia/cu13
ls $CUDA_HOME $CUDA_HOME/lib | head -80
# unversioned library names, as a -devel package gives them
for f in $CUDA_HOME/lib/lib*.so.*; do b=$(basename $f); l=${b%%.so.*}.so; [ -e $CUDA_HOME/lib/$l ] || ln -s $b $CUDA_HOME/lib/$l; done
ln -s lib $CUDA_HOME/lib64
export PATH=$CUDA_HOME/bin:$PATH
nvcc --version
cat > /tmp/t.cu <<'CU'
#include <cstdio>
#include <cub/cub.cuh>
__global__ void k(float *x) { x[threadIdx.x] *= 2; }
int main() { printf("ok\n"); return 0; }
CU
time nvcc -gencode arch=compute_90,code=sm_90 /tmp/t.cu -o /tmp/t && /tmp/t
python -c 'import torch, torch.utils.cpp_extension as c; print(torch.__version__, torch.version.cuda, c.CUDA_HOME, c._get_cuda_arch_flags() if False else "")'
pip download -q --no-deps --no-binary :all: deepspeed==0.18.9 -d /tmp/ds
cd /tmp && tar xzf ds/deepspeed-0.18.9.tar.gz && cd deepspeed-0.18.9
export DS_ACCELERATOR=cuda TORCH_CUDA_ARCH_LIST='8.0;8.6;9.0;10.0;12.0' MAX_JOBS=2 DS_ENABLE_NINJA=1
start=$(date +%s)
DS_BUILD_FUSED_ADAM=1 pip wheel -v --no-build-isolation --no-deps . -w /tmp/dsw > /tmp/fused_adam.log 2>&1 || { grep -v '^  #' /tmp/fused_adam.log | tail -80; exit 1; }
echo "FUSED_ADAM_SECONDS $(( $(date +%s) - start ))"
grep -E "nvcc|ninja" /tmp/fused_adam.log | head -5
ls -la /tmp/dsw
