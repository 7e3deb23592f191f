"""`stackbuild audit` against a loopback stand-in of PyPI's JSON API (no PyPI in unit tests): a fixture
release pinning pycrypto 2.6.1 (two published advisories) fails until its audit_allow names them with a
reason; an expired entry fails; an era release reports; what the data cannot show is said, not hidden."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.supply.audit import VulnerabilitySource, audit
from builder.profile.resolved import AuditAllow

FIXTURE = Path(__file__).parent / "fixtures" / "audit" / "auditprobe.yaml"

PYCRYPTO = [  # as PyPI gives them: one flaw as a PYSEC and a GHSA record, each naming the other
    {"id": "PYSEC-2017-94", "aliases": ["CVE-2013-7459", "GHSA-cq27-v7xp-c356"], "details": "Heap-based buffer "
     "overflow in the ALGnew function", "fixed_in": [], "link": "https://osv.dev/vulnerability/PYSEC-2017-94",
     "source": "osv", "summary": None, "withdrawn": None},
    {"id": "GHSA-cq27-v7xp-c356", "aliases": ["CVE-2013-7459", "PYSEC-2017-94"], "details": "Heap-based buffer "
     "overflow", "fixed_in": [], "link": "", "source": "ghsa", "summary": None, "withdrawn": None},
    {"id": "PYSEC-2018-97", "aliases": ["CVE-2018-6594"], "details": "weak ElGamal key parameters",
     "fixed_in": [], "link": "", "source": "osv", "summary": None, "withdrawn": None},
    {"id": "PYSEC-0000-1", "aliases": [], "details": "withdrawn", "fixed_in": [], "withdrawn": "2020-01-01"},
]


class FakePyPI:
    """/pypi/<name>/<version>/json and /pypi/<name>/json, as PyPI answers them; ``exact=False`` serves only
    the project endpoint (as the proxy in front of PyPI here does)."""

    def __init__(self, exact: bool = True):
        self.exact = exact
        self.asked: list[str] = []
        projects = {"pycrypto": ("2.6.1", {"2.6.1": PYCRYPTO}), "torch": ("2.15.0", {}), "numpy": ("2.4.0", {})}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.asked.append(self.path)
                parts = self.path.strip("/").split("/")
                body = None
                if len(parts) == 4 and parts[0] == "pypi" and fake.exact and parts[1] in projects:
                    latest, vulns = projects[parts[1]]
                    body = {"info": {"version": parts[2]}, "vulnerabilities": vulns.get(parts[2], [])}
                elif len(parts) == 3 and parts[0] == "pypi" and parts[1] in projects:
                    latest, vulns = projects[parts[1]]
                    body = {"info": {"version": latest}, "vulnerabilities": vulns.get(latest, [])}
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pypi"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pypi(monkeypatch):
    served = FakePyPI()
    monkeypatch.setenv("STACKBUILD_AUDIT_URL", served.url)
    yield served
    served.close()


def _profile(tmp_path: Path, allow: str = "") -> str:
    text = FIXTURE.read_text()
    if allow:
        head, current = text.split('  "2026.11":\n')
        text = head + '  "2026.11":\n' + allow + current
    path = tmp_path / "auditprobe.yaml"
    path.write_text(text)
    return str(path)


ALLOW = """    audit_allow:
      - id: CVE-2013-7459
        reason: the image never imports pycrypto's block ciphers; only its hash functions are used
        expires: "{expires}"
      - id: PYSEC-2018-97
        reason: ElGamal from pycrypto is not used by any training code in this image
        expires: "{expires}"
"""


def test_a_release_pinning_a_vulnerable_package_fails_with_exit_14(cli, pypi):
    code, out, err = cli("audit", str(FIXTURE) + "@2026.11")
    assert code == 14
    assert out.startswith("FAIL   auditprobe@2026.11: 2 packages, 2 known vulnerabilities (2 not allowed), 0 not seen")
    assert ("  pycrypto==2.6.1 PYSEC-2017-94 (CVE-2013-7459, GHSA-cq27-v7xp-c356): no fixed version; NOT ALLOWED"
            in out)  # the GHSA record of the same flaw is one finding, not two
    assert "pycrypto==2.6.1 PYSEC-2018-97 (CVE-2018-6594): no fixed version; NOT ALLOWED" in out
    assert "PYSEC-0000-1" not in out  # withdrawn
    assert "note: Debian packages are not audited: Debian's security tracker" in out
    assert err == ("error: known vulnerabilities neither fixed nor allowed: auditprobe@2026.11: pycrypto==2.6.1 "
                   "PYSEC-2017-94, pycrypto==2.6.1 PYSEC-2018-97 (update the pin and lock again, or add an "
                   "audit_allow entry with its reason and an expiry date to the release in its profile)\n")
    assert f"/pypi/pycrypto/2.6.1/json" in pypi.asked


def test_the_allowlist_with_reasons_passes_it(cli, pypi, tmp_path):
    later = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    code, out, err = cli("audit", _profile(tmp_path, ALLOW.format(expires=later)) + "@2026.11")
    assert code == 0, err
    assert out.startswith("ok     auditprobe@2026.11: 2 packages, 2 known vulnerabilities (0 not allowed)")
    assert (f"PYSEC-2017-94 (CVE-2013-7459, GHSA-cq27-v7xp-c356): no fixed version; allowed until {later}: the "
            "image never imports pycrypto's block ciphers; only its hash functions are used") in out
    report = json.loads(cli("audit", _profile(tmp_path, ALLOW.format(expires=later)) + "@2026.11", "--json")[1])
    assert [f["allowed"]["id"] for f in report[0]["findings"]] == ["CVE-2013-7459", "PYSEC-2018-97"]


def test_an_expired_entry_fails(cli, pypi, tmp_path):
    code, out, err = cli("audit", _profile(tmp_path, ALLOW.format(expires="2026-01-01")) + "@2026.11")
    assert code == 14
    assert "audit_allow CVE-2013-7459 expired on 2026-01-01: look again, then renew or drop it" in out
    assert "audit_allow CVE-2013-7459 expired on 2026-01-01" in err


def test_an_allow_entry_needs_a_real_reason_and_a_date(cli, pypi, tmp_path):
    bad = ALLOW.format(expires="soon").replace("reason: ElGamal from pycrypto is not used by any training code in "
                                               "this image", "reason: fine")
    code, _, err = cli("audit", _profile(tmp_path, bad) + "@2026.11")
    assert code == 3
    assert "releases.2026.11.audit_allow[0].expires: 'soon' is not a date" in err
    assert "releases.2026.11.audit_allow[1].reason: 'fine' is not a reason" in err


def test_an_era_release_reports_and_does_not_fail(cli, pypi):
    code, out, _ = cli("audit", str(FIXTURE) + "@2023.06")
    assert code == 0
    assert out.startswith("report auditprobe@2023.06: 3 packages, 2 known vulnerabilities (2 not allowed)")
    assert "note: an era release reproduces its year's pins on purpose" in out


def test_what_the_data_cannot_show_is_reported_as_not_seen(monkeypatch):
    served = FakePyPI(exact=False)  # only /pypi/<name>/json: the latest version's vulnerabilities
    try:
        report = audit("x", {"pycrypto": "2.6.1", "torch": "2.10.0", "private-pkg": "1.0",
                             "accelerate": "git+https://github.com/huggingface/accelerate@0226f75"}, (), False,
                       VulnerabilitySource(served.url))
    finally:
        served.close()
    assert [f.vulnerability.id for f in report.findings] == ["PYSEC-2017-94", "PYSEC-2018-97"]  # latest == locked
    assert sorted(report.not_seen) == [
        ("accelerate", "git+https://github.com/huggingface/accelerate@0226f75",
         "not a released version (a git pin or a URL): PyPI has no data for it"),
        ("private-pkg", "1.0", "not on this index (a package from another index or a git pin)"),
        ("torch", "2.10.0", "PyPI's JSON API here answers only for the project's latest version")]


def test_an_unreachable_api_is_exit_15(cli, monkeypatch):
    monkeypatch.setenv("STACKBUILD_AUDIT_URL", "http://127.0.0.1:1/pypi")
    code, _, err = cli("audit", str(FIXTURE) + "@2026.11")
    assert code == 15 and err.startswith("error: http://127.0.0.1:1/pypi/") and "Connection refused" in err


def test_allow_entries_match_ids_and_aliases_until_they_expire():
    served = FakePyPI()
    try:
        allow = (AuditAllow("GHSA-cq27-v7xp-c356", "reason", "2030-01-01"), AuditAllow("CVE-1999-1", "r", "2030-01-01"))
        report = audit("x", {"pycrypto": "2.6.1"}, allow, False, VulnerabilitySource(served.url), dt.date(2029, 1, 1))
        assert [f.allowed_by.id if f.allowed_by else None for f in report.findings] == ["GHSA-cq27-v7xp-c356", None]
        assert [a.id for a in report.unused] == ["CVE-1999-1"] and report.failed
        later = audit("x", {"pycrypto": "2.6.1"}, allow, False, VulnerabilitySource(served.url), dt.date(2030, 1, 2))
        assert [a.id for a in later.expired] == ["GHSA-cq27-v7xp-c356", "CVE-1999-1"] and later.failed
    finally:
        served.close()


def test_audit_needs_a_subject(cli):
    code, _, err = cli("audit")
    assert code == 2 and "name a stack release or an image" in err


def test_an_image_is_audited_from_its_lock_label_with_its_releases_allowlist(cli, fake, pypi):
    from builder.plan import labels as schema

    fake.images["example.org/team/qlora:2026.11-cpu"] = {"Id": "sha256:" + "a" * 64, "Config": {"Labels": {
        schema.STACK: "qlora", schema.RELEASE: "2026.11", schema.LOCK: json.dumps({"pycrypto": "2.6.1"})}}}
    code, out, err = cli("audit", "example.org/team/qlora:2026.11-cpu")
    assert code == 14 and out.startswith("FAIL   example.org/team/qlora:2026.11-cpu (qlora@2026.11): 1 packages, "
                                         "2 known vulnerabilities (2 not allowed)")
    fake.images["example.org/team/other:1"] = {"Id": "sha256:" + "b" * 64, "Config": {"Labels": {}}}
    code, _, err = cli("audit", "example.org/team/other:1")
    assert code == 4 and "carries no io.stackbuild.lock label" in err
