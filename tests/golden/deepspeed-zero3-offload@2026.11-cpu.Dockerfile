# deepspeed-zero3-offload@2026.11, target cpu
# DeepSpeed ZeRO-3 with CPU/NVMe offload and pre-compiled ops
# Rendered by `stackbuild render` from stacks/deepspeed-zero3-offload.yaml: edit the profile, not this file.
# Layers run from the most stable and expensive (OS, Python, torch) to the most volatile
# (pins, stackbuild's files, labels), so bumping one pin rebuilds only what follows it.

FROM debian:bookworm-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# Site settings (index URLs that may carry credentials, an extra CA, mirrors) reach each network
# step from stackbuild's loopback server through this script, never through a layer.
COPY site.sh /opt/stackbuild/site.sh

# OS packages: the interpreter and its headers, a C toolchain for compiled ops and
# torch.compile, and the stack's own system libraries.
# Versions come from the base image's distribution release, which the FROM line fixes.
# hadolint ignore=DL3008
RUN . /opt/stackbuild/site.sh && site_begin \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential \
      ca-certificates \
      git \
      libaio-dev \
      python3 \
      python3-dev \
      python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && site_end

# Python 3.11 from the distribution, in a virtual environment so pip never
# touches the system's packages; build tools pinned (and held) for reproducible source builds.
RUN . /opt/stackbuild/site.sh && site_begin \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install pip==25.3 setuptools==80.9.0 wheel==0.45.1 \
 && printf '%s\n' pip==25.3 setuptools==80.9.0 wheel==0.45.1 > /opt/stackbuild/held.txt \
 && site_end

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# torch: torch==2.10.0 from PyPI.
# The largest layer, shared by every stack and release with the same base, Python and torch;
# held.txt constrains every later pip install to it, so nothing can swap torch behind our back.
RUN . /opt/stackbuild/site.sh && site_begin \
 && pip install -c /opt/stackbuild/held.txt torch==2.10.0 \
 && printf '%s\n' torch==2.10.0 >> /opt/stackbuild/held.txt \
 && site_end

# deepspeed: ZeRO-3 offload; its ops are pre-compiled here, LLM-unused ones switched off
# Built with --no-build-isolation: its setup.py imports the torch installed above.
# MAX_JOBS is sized to the build host's memory (4 GiB per compile job).
# The build host's CPU flags go to /opt/stackbuild/build-host-cpu.txt: code compiled here may need them.
RUN . /opt/stackbuild/site.sh && site_begin \
 && MAX_JOBS="$(awk -v per=4 -v cpus="$(nproc)" '/^MemAvailable:/ { n = int($2 / 1048576 / per); if (n < 1) n = 1; if (n > cpus) n = cpus; print n }' /proc/meminfo)" \
 && export MAX_JOBS \
 && pip install -c /opt/stackbuild/held.txt ninja==1.13.0 \
 && DS_ACCELERATOR=cpu \
    DS_BUILD_AIO=1 \
    DS_BUILD_CPU_ADAM=1 \
    DS_BUILD_SHM_COMM=1 \
    DS_ENABLE_NINJA=1 \
    LDFLAGS=-Wl,--no-as-needed,-laio \
    pip install --no-build-isolation -c /opt/stackbuild/held.txt deepspeed==0.18.9 \
 && printf '%s\n' ninja==1.13.0 deepspeed==0.18.9 >> /opt/stackbuild/held.txt \
 && { grep -m1 -E '^(flags|Features)' /proc/cpuinfo || true; } > /opt/stackbuild/build-host-cpu.txt \
 && site_end

# The remaining pins, held to everything installed above. Bumping one rebuilds from here on.
RUN . /opt/stackbuild/site.sh && site_begin \
 && pip install -c /opt/stackbuild/held.txt \
      accelerate==1.13.0 \
      datasets==4.8.4 \
      transformers==5.14.1 \
 && printf '%s\n' accelerate==1.13.0 datasets==4.8.4 transformers==5.14.1 >> /opt/stackbuild/held.txt \
 && site_end

# stackbuild's own files: the smoke checks that prove the image (python /opt/stackbuild/smoke/run.py),
# what the image says about itself, and ready-made configs.
# files/ds_config_zero3_offload.json: ZeRO-3 with optimizer and parameters offloaded to pinned CPU memory; "auto" values are filled by the Hugging Face Trainer.
COPY files/ /opt/stackbuild/files/
COPY smoke/ /opt/stackbuild/smoke/
COPY manifest.json /opt/stackbuild/manifest.json

WORKDIR /workspace
CMD ["bash"]

# Labels last: they change with every pin, and nothing builds on top of them.
LABEL \
      org.opencontainers.image.title="stackbuild deepspeed-zero3-offload@2026.11 (cpu)" \
      org.opencontainers.image.description="DeepSpeed ZeRO-3 with CPU/NVMe offload and pre-compiled ops" \
      org.opencontainers.image.version="2026.11-cpu" \
      org.opencontainers.image.base.name="debian:bookworm-slim" \
      io.stackbuild.stack="deepspeed-zero3-offload" \
      io.stackbuild.release="2026.11" \
      io.stackbuild.target="cpu" \
      io.stackbuild.options="" \
      io.stackbuild.pins="{\"accelerate\":\"1.13.0\",\"datasets\":\"4.8.4\",\"deepspeed\":\"0.18.9\",\"ninja\":\"1.13.0\",\"torch\":\"2.10.0\",\"transformers\":\"5.14.1\"}" \
      io.stackbuild.fixes="ds-aio-precompile,ds-ninja-missing,ds-cpu-adam-build,ds-cpu-accelerator-build"
