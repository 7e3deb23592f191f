"""torch.compile works: the interpreter is one it supports and a C compiler is present.

Inductor compiles into a new, empty cache folder (TORCHINDUCTOR_CACHE_DIR), so a kernel cached by
an earlier run can never stand in for the compiler. Two of its defaults pay off only over many
compilations and are turned off for this one: the pool of compile workers (each imports torch
again; compile_threads=1 compiles in this process) and the precompiled header (torch >= 2.7 builds
one, about 20 s of g++ on a small host, before the first kernel; without it the kernel includes the
same headers). Inductor's vector-ISA probe compiles a test kernel and loads it in a fresh
`import torch` for every ISA the CPU reports (torch >= 2.4: AVX2, AVX512, AVX512-VNNI, AMX and
their bf16/fp16 variants, 10 such pairs and about 27 s on an AMX host); here it probes AVX2 alone,
where the CPU has it. The probe still runs, the kernel is still compiled vectorised and loaded: a
missing or broken compiler fails as before, and inductor falls back by itself from any ISA the
compiler cannot build, so the wider ISAs add time, not proof.
"""

# smoke-runner: preload torch torch._dynamo torch._inductor.compile_fx; early (the longest check)

import os
import tempfile

from _smoke import context, first_line, report

context()
cache = tempfile.mkdtemp(prefix="smoke-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
try:
    import torch
except Exception as exc:
    report("fail", "import torch failed: {} (install the release's torch pin)".format(first_line(exc)))

try:
    import torch._inductor.config as inductor_config
    inductor_config.compile_threads = 1
    if hasattr(inductor_config, "cpp_cache_precompile_headers"):
        inductor_config.cpp_cache_precompile_headers = False
except Exception:  # torch.compile below reports what is wrong with inductor
    pass
try:
    import torch._inductor.cpu_vec_isa as vec_isa  # torch >= 2.4; torch 2.0 probes one or two ISAs
    probe_all = vec_isa.x86_isa_checker
    vec_isa.x86_isa_checker = lambda: [isa for isa in probe_all() if isa == "avx2"]
except (ImportError, AttributeError):
    pass
try:
    fn = torch.compile(lambda x: torch.sin(x) * 2 + 1)
    out = fn(torch.zeros(4))
except Exception as exc:
    report("fail", "torch.compile failed: {}: {} (torch 2.0 needs Python <= 3.10 and a C compiler)".format(
        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
finally:
    import shutil
    shutil.rmtree(cache, ignore_errors=True)
if not torch.equal(out, torch.ones(4)):
    report("fail", "torch.compile gave a wrong result: {}".format(out.tolist()))
report("pass", "torch {} compiled a function".format(torch.__version__))
