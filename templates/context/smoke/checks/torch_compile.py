"""torch.compile works: the interpreter is one it supports and a C compiler is present."""

from _smoke import context, first_line, report

context()
try:
    import torch
except Exception as exc:
    report("fail", "import torch failed: {} (install the release's torch pin)".format(first_line(exc)))

try:
    fn = torch.compile(lambda x: torch.sin(x) * 2 + 1)
    out = fn(torch.zeros(4))
except Exception as exc:
    report("fail", "torch.compile failed: {}: {} (torch 2.0 needs Python <= 3.10 and a C compiler)".format(
        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
if not torch.equal(out, torch.ones(4)):
    report("fail", "torch.compile gave a wrong result: {}".format(out.tolist()))
report("pass", "torch {} compiled a function".format(torch.__version__))
