"""The web portal's speed: ``python bench/web.py`` (``--quick`` for a short run).

Two scenarios against a real ``qprserver serve`` (one worker, HTTPS with the
self-signed certificate ``init`` makes):

- **download**: one big file (1 GiB; quick 64 MiB) over HTTPS with ``curl``,
  against Debian's nginx serving the same file with the same certificate and key,
  alternating runs; target ratio ≤ 1.5.
- **concurrent**: an SFTP ``get`` of the same file by another recipient, alone and
  while 10 web downloads of it run; target: it keeps ≥ 80 % of its speed.
- **posteingang**: one recipient with 100,000 deliveries (quick 5,000); the time of
  one page request over a kept-alive HTTPS connection on loopback (an upper bound
  of the server's time), for the first page and a page deep in the list, by date,
  name and kind, and filtered by name and IK; target median ≤ 150 ms for each.

The deliveries are written in-process before ``serve`` starts (``populate.py``);
the account logs in through the portal's own forms (password, then a TOTP code).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import pyotp
from populate import FileSpec, populate
from qprside import QprServer
from util import BenchError, GiB, MiB, free_port, log, median, stop_process

from qprserver.ik import check_digit

RESULTS = Path(__file__).resolve().parent / "results" / "web-latest.json"
DEPOSITOR = "190500027"
RECIPIENT = "180500016"
SFTP_RECIPIENT = "180900032"  # logs in with a key only, for the concurrent SFTP get
WEB_DOWNLOADS_AT_ONCE = 10
CONCURRENT_TARGET = 0.8
SUBJECT = "51051234" + str(check_digit("51051234"))
PASSWORD = "bench password, long enough"
DOWNLOAD_TARGET = 1.5
PAGE_TARGET_MS = 150.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_DOC = re.compile(r'<a href="/dokumente/(\d+)" download>([^<]+)</a>')


def _write(path: Path, size: int) -> str:
    """A PDF-shaped file of size bytes (random body); its SHA-256."""
    digest = hashlib.sha256()
    head, tail = b"%PDF-1.7\n", b"\n%%EOF\n"
    with path.open("wb") as out:
        for piece in (head, None, tail):
            if piece is None:
                left = size - len(head) - len(tail)
                while left > 0:
                    chunk = os.urandom(min(8 * MiB, left))
                    out.write(chunk)
                    digest.update(chunk)
                    left -= len(chunk)
            else:
                out.write(piece)
                digest.update(piece)
    return digest.hexdigest()


def _login(client: httpx.Client, secret: str) -> None:
    token = _CSRF.search(client.get("/anmelden").text)
    assert token is not None
    client.post("/anmelden", data={"csrf": token.group(1), "ik": RECIPIENT, "passwort": PASSWORD})
    page = client.get("/anmelden/code").text
    token = _CSRF.search(page)
    if token is None:
        raise BenchError("the password step did not lead to the code step")
    done = client.post(
        "/anmelden/code", data={"csrf": token.group(1), "code": pyotp.TOTP(secret).now()}
    )
    if done.status_code != 303:
        raise BenchError(f"login failed: {done.status_code}")


def _nginx(root: Path, www: Path, cert: Path, key: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    prefix = root / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp;
  proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
  uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  default_type application/octet-stream;
  sendfile on;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {www};
  }}
}}
""",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            shutil.which("nginx") or "/usr/sbin/nginx",
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"https://127.0.0.1:{port}/", verify=False, timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise BenchError("nginx did not start")


def _curl(url: str, cookie: str | None) -> tuple[float, int]:
    argv = ["curl", "-k", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]
    if cookie:
        argv += ["-b", f"qpr_session={cookie}"]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    seconds, size = out.split()
    return float(seconds), int(size)


def _sftp_get(port: int, key: Path, name: str) -> float:
    argv = [
        "sftp",
        "-q",
        "-P",
        str(port),
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-b",
        "-",
        f"{SFTP_RECIPIENT}@127.0.0.1",
    ]
    start = time.perf_counter()
    subprocess.run(
        argv, input=f"get /inbox/{name} /dev/null\n", text=True, check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--db-url", help="postgresql+asyncpg://… (a fresh schema)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    big = 64 * MiB if args.quick else 1 * GiB
    count = 5_000 if args.quick else 100_000
    runs = args.runs or (3 if args.quick else 5)
    root = Path(tempfile.mkdtemp(prefix="qprbench-web-"))
    server = QprServer(root / "qpr", db_url=args.db_url, workers=1)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        server.write_config(None)
        web_port = free_port()
        with server.config.open("a", encoding="utf-8") as config:
            config.write(
                f'\n[web]\nenabled = true\nhost = "127.0.0.1"\nport = {web_port}\n'
                'tls_cert = "keys/web.crt"\ntls_key = "keys/web.key"\n'
            )
        server.cli("init")
        server.cli_inprocess("account", "add", DEPOSITOR, "--name", "MD", "--role", "depositor")
        server.cli_inprocess("account", "add", RECIPIENT, "--name", "LV", "--role", "recipient")
        server.cli_inprocess(
            "account", "add", SFTP_RECIPIENT, "--name", "LV BY", "--role", "recipient"
        )
        ssh_key = root / "sftp_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)], check=True
        )
        server.cli_inprocess("account", "key", "add", SFTP_RECIPIENT, str(ssh_key) + ".pub")
        subprocess.run(
            [server.bin, "--config", str(server.config), "account", "password", RECIPIENT],
            input=PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
        enrolled = json.loads(server.cli("account", "totp", "enable", RECIPIENT, "--json"))
        secret = pyotp.parse_uri(enrolled["uri"]).secret
        www = root / "www"
        www.mkdir()
        # nginx's worker (nobody, when started as root) must read what it serves.
        root.chmod(0o755)
        www.chmod(0o755)
        log(f"writing a {big // MiB} MiB file and {count:,} deliveries …")
        big_sha = _write(www / "gross.pdf", big)
        (www / "gross.pdf").chmod(0o644)
        small = www / "klein.pdf"
        small_sha = _write(small, 4096)
        specs = [FileSpec(f"{SUBJECT}_gross.pdf", www / "gross.pdf", big_sha, big)]
        sftp_spec = FileSpec(f"{SUBJECT}_gross_sftp.pdf", www / "gross.pdf", big_sha, big)
        specs += [FileSpec(f"{SUBJECT}_{i:06d}.pdf", small, small_sha, 4096) for i in range(count)]
        populate(server.config, DEPOSITOR, SUBJECT, {RECIPIENT: specs, SFTP_RECIPIENT: [sftp_spec]})
        server.start()
        base = f"https://127.0.0.1:{web_port}"
        results: dict[str, object] = {"sizes": {"download": big, "deliveries": count}}
        with httpx.Client(base_url=base, verify=False, timeout=60) as client:
            _login(client, secret)
            found = dict(
                (name, int(i))
                for i, name in _DOC.findall(client.get("/posteingang?suche=gross").text)
            )
            big_id = found[f"{SUBJECT}_gross.pdf"]
            deep_after = {
                "datum": "100",
                "name": f"100:{SUBJECT}_000100.pdf",
                "art": "100:pruefbericht",
            }
            pages = {}
            for sort in ("datum", "name", "art"):
                pages[f"first page by {sort}"] = {"sortierung": sort}
                pages[f"deep page by {sort}"] = {
                    "sortierung": sort,
                    "richtung": "ab",
                    "nach": deep_after[sort],
                }
            pages["filter by name"] = {"suche": "_0999"}
            pages["filter by IK"] = {"suche": SUBJECT}
            timings: dict[str, dict[str, float]] = {}
            for label, params in pages.items():
                url = "/posteingang?" + urlencode(params)
                client.get(url)  # warm
                seconds = []
                for _ in range(max(runs, 5)):
                    start = time.perf_counter()
                    page = client.get(url)
                    seconds.append(time.perf_counter() - start)
                    if page.status_code != 200:
                        raise BenchError(f"{url}: {page.status_code}")
                ms = median(seconds) * 1000
                timings[label] = {"median_ms": round(ms, 1), "rows": len(_DOC.findall(page.text))}
                log(f"posteingang {label}: {ms:.1f} ms")
            results["posteingang"] = timings
            cookie = client.cookies["qpr_session"]
            cert, key = server.root / "keys" / "web.crt", server.root / "keys" / "web.key"
            nginx, nginx_port = _nginx(root, www, cert, key)
            qpr, ngx = [], []
            for _ in range(runs):
                seconds, size = _curl(f"{base}/dokumente/{big_id}", cookie)
                if size != big:
                    raise BenchError(f"qprserver sent {size} of {big} bytes")
                qpr.append(seconds)
                seconds, size = _curl(f"https://127.0.0.1:{nginx_port}/gross.pdf", None)
                if size != big:
                    raise BenchError(f"nginx sent {size} of {big} bytes")
                ngx.append(seconds)
                log(f"download: qprserver {qpr[-1]:.2f} s, nginx {ngx[-1]:.2f} s")
            alone, together = [], []
            for _ in range(runs):
                alone.append(_sftp_get(server.port, ssh_key, sftp_spec.name))
                curls = [
                    subprocess.Popen(
                        [
                            "curl",
                            "-k",
                            "-s",
                            "-o",
                            "/dev/null",
                            "-b",
                            f"qpr_session={cookie}",
                            f"{base}/dokumente/{big_id}",
                        ]
                    )
                    for _ in range(WEB_DOWNLOADS_AT_ONCE)
                ]
                time.sleep(0.5)  # the web downloads are under way
                together.append(_sftp_get(server.port, ssh_key, sftp_spec.name))
                for proc in curls:
                    proc.wait()
                log(f"sftp get: alone {alone[-1]:.2f} s, beside web downloads {together[-1]:.2f} s")
        ratio = median(qpr) / median(ngx)
        results["download"] = {
            "qprserver_s": round(median(qpr), 3),
            "nginx_s": round(median(ngx), 3),
            "qprserver_mb_s": round(big / median(qpr) / 1e6, 1),
            "nginx_mb_s": round(big / median(ngx) / 1e6, 1),
            "ratio": round(ratio, 2),
            "target": DOWNLOAD_TARGET,
            "met": ratio <= DOWNLOAD_TARGET,
        }
        kept = median(alone) / median(together)
        results["concurrent"] = {
            "sftp_alone_s": round(median(alone), 3),
            "sftp_beside_web_s": round(median(together), 3),
            "speed_kept": round(kept, 2),
            "target": CONCURRENT_TARGET,
            "met": kept >= CONCURRENT_TARGET,
        }
        worst = max(t["median_ms"] for t in timings.values())
        results["posteingang_met"] = worst <= PAGE_TARGET_MS
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"{'scenario':<34} {'qprserver':>10} {'nginx':>10} {'ratio':>6} {'target':>8}")
        d = results["download"]
        assert isinstance(d, dict)
        print(
            f"{'download ' + str(big // MiB) + ' MiB over HTTPS (curl)':<34} "
            f"{d['qprserver_s']:>9.2f}s {d['nginx_s']:>9.2f}s {d['ratio']:>6.2f} "
            f"{'≤ 1.5':>8}"
        )
        c = results["concurrent"]
        assert isinstance(c, dict)
        print(
            f"{'sftp get beside 10 web downloads':<34} {c['sftp_beside_web_s']:>9.2f}s "
            f"{'alone ' + format(c['sftp_alone_s'], '.2f') + 's':>10} {c['speed_kept']:>6.2f} "
            f"{'≥ 0.80':>8}"
        )
        for label, t in timings.items():
            print(
                f"{'posteingang ' + label:<34} {t['median_ms']:>8.1f}ms {'':>10} {'':>6} "
                f"{'≤ 150 ms':>8}"
            )
        return 0 if d["met"] and results["posteingang_met"] else 1
    finally:
        if nginx is not None:
            stop_process(nginx, 10, [])
        server.stop()
        server.drop_schema()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
