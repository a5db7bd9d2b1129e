"""SSH push to many devices: wall time of ``deploy`` to 1, 5 and 20 real sshd devices on
loopback, with a bounded number of hosts at a time.

    .venv/bin/python bench/bench_deploy_fleet.py [--hosts 1,5,20] [--parallel 1,4,10,20]

Every device is a real OpenSSH server on 127.0.0.1 (the test kit's ``start_sshd``) with its
own models folder, restart and health commands. Each run pushes a new signed version
(upload, remote sha256 check, atomic switch, restart, health check, prune), so no host is
ever "unchanged". Reported: seconds per run and per host.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "fleet"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", default="1,5,20")
    ap.add_argument("--parallel", default="1,4,10,20", help="hosts at a time, for the largest fleet")
    ap.add_argument("--default-parallel", type=int, default=10, help="hosts at a time for the --hosts runs")
    args = ap.parse_args()
    from fleet_helpers import make_bundle
    from testkit import keygen, known_hosts_for, start_sshd, write_inventory

    from facefleet.fleet.deploy import deploy
    from facefleet.fleet.inventory import load_inventory
    from facefleet.registry.keys import generate_keypair
    from facefleet.workspace import Workspace

    sizes = [int(n) for n in args.hosts.split(",")]
    widths = [int(n) for n in args.parallel.split(",")]
    biggest = max(sizes)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        tmp = Path(tmp)
        ws = Workspace.init(tmp / "ws")
        generate_keypair(ws.keys_dir)
        key = keygen(tmp / "client_key")
        devices = []
        try:
            t0 = time.perf_counter()
            for i in range(biggest):
                devices.append(start_sshd(f"cam{i:02d}", tmp / f"dev{i:02d}", key))
            print(f"{biggest} sshd devices up in {time.perf_counter() - t0:.1f} s", flush=True)
            known = known_hosts_for(tmp / "known_hosts", devices)
            runs = [(n, args.default_parallel) for n in sizes] + [(biggest, w) for w in widths]
            for version, (n, width) in enumerate(runs, start=1):
                inv_path = write_inventory(
                    tmp / f"inventory{version}.yaml",
                    {"cameras": {d.name: d for d in devices[:n]}},
                    key,
                )
                bundle = make_bundle(ws, version)
                start = time.perf_counter()
                report = deploy(
                    ws, load_inventory(inv_path), bundle, parallel=width, known_hosts=known, record=False
                )
                seconds = time.perf_counter() - start
                failed = [r.host for r in report.results if r.result == "failed"]
                if failed:
                    print(f"  failed: {failed}: {[r.error for r in report.results if r.result == 'failed']}")
                rows.append((n, min(width, n), seconds, len(failed)))
                print(f"{n:3d} hosts, {min(width, n):2d} at a time: {seconds:6.2f} s", flush=True)
        finally:
            for d in devices:
                d.stop()
    print(f"\n{'hosts':>5} {'at a time':>9} {'seconds':>8} {'s/host':>7} {'failed':>6}")
    for n, width, seconds, failed in rows:
        print(f"{n:5d} {width:9d} {seconds:8.2f} {seconds / n:7.2f} {failed:6d}")
    return 0 if all(r[3] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
