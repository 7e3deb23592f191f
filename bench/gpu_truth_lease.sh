#!/bin/bash
# One lease of a 2-GPU host for bench/gpu_truth.py, in three commands run back to back (the host
# is given back when idle, so each command keeps it busy up to LIMIT_S seconds):
#   bash bench/gpu_truth_lease.sh start LIMIT_S    carry DIR's contexts/ wheels/ sdist/ debs/: copy
#       DIR to /tmp/gt, install the small wheels, start DeepSpeed's and flash-attn's builds in
#       the background (own sessions, so they outlive the command), wait for them
#   bash bench/gpu_truth_lease.sh bnb LIMIT_S      carry DIR/wheels-big (bitsandbytes): install it,
#       run the alpaca-lora and qlora contexts, wait for the builds
#   bash bench/gpu_truth_lease.sh checks LIMIT_S   run the deepspeed and flash-attn contexts as each
#       build finishes; the table, results and build logs go to $OUT
#   bash bench/gpu_truth_lease.sh ds-image LIMIT_S  alone, one command: carry DIR's contexts/ wheels/
#       sdist/ debs/; build DeepSpeed exactly as the image does (gpu_truth.py build --as-image: the
#       context's pip line and build_ext hook, ops side by side), then its deepspeed-ops and
#       deepspeed-cpu-adam checks; builds.json, the build log and the table go to $OUT
# The image's own CUDA toolchain instead of the host's nvcc (a slim cuda base's cuda-toolkit wheels,
# `gpu_truth.py prepare DIR --toolkit 13.0.2`; nvidia-nvvm's wheel alone is 59 MiB, so it travels first):
#   bash bench/gpu_truth_lease.sh tk-nvvm          carry DIR/toolkit-nvvm: keep it in /tmp/tk
#   bash bench/gpu_truth_lease.sh tk-ds LIMIT_S    carry DIR's contexts/ wheels/ sdist/ debs/ toolkit/: build
#       DeepSpeed as the image does with the wheels as CUDA_HOME (gpu_truth.py build --as-image --toolkit
#       /tmp/tk), then run the deepspeed and flash-attn contexts
#   bash bench/gpu_truth_lease.sh tk-bnb           carry DIR/wheels-big: run the alpaca-lora and qlora
#       contexts; the whole table, builds.json and the build log go to $OUT
#   bash bench/gpu_truth_lease.sh tk-one LIMIT_S   alone, one command (prepare --toolkit 13.0.2 --toolkit-tar):
#       carry DIR's contexts/ wheels/ sdist/ debs/ toolkit-*.tar.xz: tk-ds, then the table to $OUT
#       (DSOPS="fused_adam cpu_adam": only those ops, a shorter build of the same toolchain)
# DIR is $GPU_TRUTH_DIR or .gpu (made here by `python bench/gpu_truth.py prepare .gpu`).
# DSJOBS / FAJOBS: MAX_JOBS of each build (ds-image: the job budget; default the image's rule, which reads MemAvailable) (default 8 and 28 on 32 cores: DeepSpeed's ops build one
# after another with a few sources each, flash-attn's 70-odd kernels in parallel).
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
DIR=${GPU_TRUTH_DIR:-.gpu}; G=/tmp/gt; T0=$(date +%s); phase=$1; limit=${2:-540}; REPO=$PWD
status() { echo "== $(( $(date +%s)-T0 )) s"; cat $G/builds.json 2>/dev/null; echo; tail -n 3 $G/ds.out $G/fa.out 2>/dev/null
  for l in $G/deepspeed-serial.log $G/flash-attn.log; do [ -f $l ] && echo "-- $l: $(wc -l <$l) lines: $(tail -c 400 $l | tr '\n' ' ')"; done
  pgrep -fa '[g]t.py build' | cut -c1-100; uptime; }
waitfor() { while [ $(( $(date +%s)-T0 )) -lt $limit ]; do pgrep -f '[g]t.py build' >/dev/null || break; sleep 15; done; status; }
built() { python3 -c "import json,sys; sys.exit(0 if '$1' in json.load(open('$G/builds.json')) else 1)" 2>/dev/null; }
case $phase in
start)
  rm -rf $G; cp -r $DIR $G; cp bench/gpu_truth.py /tmp/gt.py
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $G/wheels/*.whl || exit 1
  for d in $G/debs/*.deb; do dpkg-deb -x $d $G/aio; done; ln -sf libaio.so.1 $G/aio/usr/lib/x86_64-linux-gnu/libaio.so
  cd $G
  setsid nohup python3 /tmp/gt.py build $G --no-wheels --only deepspeed --jobs ${DSJOBS:-8} > $G/ds.out 2>&1 < /dev/null &
  sleep 3
  setsid nohup python3 /tmp/gt.py build $G --no-wheels --only flash-attn --jobs ${FAJOBS:-28} > $G/fa.out 2>&1 < /dev/null &
  sleep 5; nvidia-smi -L; nproc; free -g; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  waitfor ;;
bnb)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $REPO/$DIR/wheels-big/*.whl || exit 1
  cd $G; python3 /tmp/gt.py run $G --context alpaca qlora
  status; waitfor ;;
checks)
  cd $G; ds=0; fa=0
  while [ $(( $(date +%s)-T0 )) -lt $limit ]; do
    [ $ds = 0 ] && built deepspeed && { python3 /tmp/gt.py run $G --context deepspeed; ds=1; }
    [ $fa = 0 ] && built flash-attn && { python3 /tmp/gt.py run $G --context flash-attn; fa=1; }
    [ $ds$fa = 11 ] && break; pgrep -f '[g]t.py build' >/dev/null || break; sleep 10; done
  status
  python3 /tmp/gt.py run $G --context none --markdown $OUT/gpu-truth.md > /dev/null
  cp $G/results.json $G/builds.json $OUT/ 2>/dev/null; for l in ds.out fa.out deepspeed-serial.log flash-attn.log; do [ -f $G/$l ] && tail -c 200000 $G/$l > $OUT/$l; done
  cat $OUT/gpu-truth.md ;;
ds-image)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done; cp bench/gpu_truth.py /tmp/gt.py
  nproc; free -g | head -2; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  cd $G; timeout $(( limit - 60 )) python3 /tmp/gt.py build $G --only deepspeed --as-image ${DSJOBS:+--jobs $DSJOBS}; echo "build exit $?"
  python3 /tmp/gt.py run $G --context deepspeed --only deepspeed-ops deepspeed-cpu-adam --launcher-gpus 1 \
    --markdown $OUT/gpu-truth.md > /dev/null
  cat $OUT/gpu-truth.md; cp $G/builds.json $G/results.json $OUT/ 2>/dev/null
  [ -f $G/deepspeed-image.log ] && tail -c 4000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log
  cat $G/builds.json ;;
tk-nvvm)
  mkdir -p /tmp/tk && cp $DIR/toolkit-nvvm/*.whl /tmp/tk/ && ls -la /tmp/tk
  nvidia-smi -L; nproc; free -g | head -2; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)' ;;
tk-ds)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done
  cp $DIR/toolkit/*.whl /tmp/tk/ && cp bench/gpu_truth.py /tmp/gt.py && ls /tmp/tk
  cd $G; timeout $(( limit - 90 )) python3 /tmp/gt.py build $G --only deepspeed --as-image --toolkit /tmp/tk \
    ${DSJOBS:+--jobs $DSJOBS}; echo "build exit $?"
  grep -c "toolkit-site/nvidia/cu13/bin/nvcc" $G/deepspeed-image.log; grep -m2 -o "[^ ]*/bin/nvcc " $G/deepspeed-image.log
  python3 /tmp/gt.py run $G --context deepspeed flash-attn --launcher-gpus 1
  cat $G/builds.json ;;
tk-one)
  rm -rf $G; mkdir -p $G; for d in contexts wheels sdist debs; do cp -r $DIR/$d $G/; done; cp bench/gpu_truth.py /tmp/gt.py
  nvidia-smi -L; nproc; python3 -c 'import torch;print(torch.__version__, torch.version.cuda)'
  cd $G; timeout $(( limit - 100 )) python3 /tmp/gt.py build $G --only deepspeed --as-image \
    --toolkit $(ls $REPO/$DIR/toolkit-*.tar.xz) ${DSJOBS:+--jobs $DSJOBS} ${DSOPS:+--ops $DSOPS}; echo "build exit $?"
  echo "nvcc calls from the wheels: $(grep -c 'toolkit-site/nvidia/cu13/bin/nvcc' $G/deepspeed-image.log)," \
    "from elsewhere: $(grep -o '[^ ]*/bin/nvcc ' $G/deepspeed-image.log | grep -vc toolkit-site)"
  python3 /tmp/gt.py run $G --context ${CONTEXTS:-deepspeed flash-attn} --launcher-gpus 1 --markdown $OUT/gpu-truth.md > /dev/null
  cat $OUT/gpu-truth.md; cp $G/results.json $G/builds.json $OUT/ 2>/dev/null
  [ -f $G/deepspeed-image.log ] && tail -c 4000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log ;;
tk-bnb)
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $G/site $REPO/$DIR/wheels-big/*.whl || exit 1
  cd $G; python3 /tmp/gt.py run $G --context alpaca qlora --launcher-gpus 1
  python3 /tmp/gt.py run $G --context none --markdown $OUT/gpu-truth.md > /dev/null
  cp $G/results.json $G/builds.json $OUT/ 2>/dev/null; [ -f $G/deepspeed-image.log ] && tail -c 4000000 $G/deepspeed-image.log > $OUT/deepspeed-image.log
  cat $OUT/gpu-truth.md ;;
esac
