"""Screenshots of every console page into docs/console/*.png, from a demo workspace.

    .venv/bin/python scripts/screenshots.py [--out docs/console] [--keep /tmp/demo-ws]

The demo workspace is built with the library, the way a person would with the CLI: the
knn_examples people and two five_celebrity people enrolled, v1 trained and promoted, the pbs
clip recognised on a "camera" with v1, its unknown captures collected and clustered, 20
captures of two ORL people collected from a second camera and kept as strangers, five of
madonna collected from it before she was enrolled (her cluster then looks like her), a second
version trained, a third after mindy_kaling was also enrolled as "mindy" by mistake (its page
shows the pair among its look-alikes), heartbeats of three devices (one with a snapshot from
the clip) and a deployment on record. The three devices are real sshd "cameras" on 127.0.0.1
in the inventory. Then ``facefleet serve`` runs on 127.0.0.1 and headless Chromium captures
each page, then "mindy" is merged into mindy_kaling from the person page (which then offers
the undo), and last a deployment is started from the fleet page while it runs. Needs
../shared/data beside the repository, and sshd.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEFLEET_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
ADMIN = ("ada", "demo-password")


def build(root: Path) -> None:
    import cv2
    from testkit import camera_run

    from facefleet.curate import clusters as cl
    from facefleet.curate import labels
    from facefleet.curate.collect import collect
    from facefleet.enrol import enroll, plan_folder
    from facefleet.fleet import records, snapshots
    from facefleet.registry.keys import generate_keypair
    from facefleet.registry.versions import promote
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import current_embedder_id, train
    from facefleet.web.console import accounts
    from facefleet.workspace import Workspace

    ws = Workspace.init(root)
    enroll(ws, plan_folder(DATA / "faces/examples/knn_examples/train"))
    generate_keypair(ws.keys_dir)
    config = load_config(workspace_train=None)
    config.name = "alpha"
    first = train(ws, config)
    promote(ws, first.version, "production", why="first model, checked on knn_examples/test")
    clip = DATA / "video/pbs_whitehouse_meeting_17s.mp4"
    dev = root.parent / "lobby-cam"
    shutil.rmtree(dev, ignore_errors=True)
    camera_run(ws, first, clip, dev, margin=0.3)
    collect(ws, [dev])
    # a courier the door camera saw ten times each on two rounds, kept as strangers: the Review
    # page's note and the next version's stranger estimate count them as the people they are
    courier = root.parent / "door-cam-captures"
    shutil.rmtree(courier, ignore_errors=True)
    courier.mkdir()
    for subject in ("s31", "s32"):
        for photo in sorted((DATA / "faces/orl" / subject).iterdir()):
            (courier / f"{subject}_{photo.name}").symlink_to(photo)
    with ws.open_store() as st:
        before = {f.id for f in st.faces(status="candidate")}
    collect(ws, [courier], device="door-cam")
    emb = current_embedder_id(ws)
    with ws.open_store() as st:
        labels.stranger(st, [f.id for f in st.faces(status="candidate") if f.id not in before])
        cl.update_clusters(st, emb)
    # madonna at the door before she was enrolled: once she is (below), her cluster says so
    visitor = root.parent / "door-cam-visitor"
    shutil.rmtree(visitor, ignore_errors=True)
    visitor.mkdir()
    for photo in sorted((DATA / "faces/five_celebrity/val/madonna").iterdir()):
        (visitor / f"visitor_{photo.name}").symlink_to(photo)
    collect(ws, [visitor], device="door-cam")
    with ws.open_store() as st:
        cl.update_clusters(st, emb)
    celeb = DATA / "faces/five_celebrity/train"
    items = [(p.name, f) for p in (celeb / "madonna", celeb / "mindy_kaling") for f in sorted(p.iterdir())]
    enroll(ws, items)
    config.name = "beta"
    second = train(ws, config)
    promote(ws, second.version, "validated", why="adds madonna and mindy_kaling")
    # then a slip: three more photos of mindy_kaling enrolled as "mindy"; the third version's
    # page shows the pair first among its look-alikes, and the diff its thresholds falling
    val = sorted((DATA / "faces/five_celebrity/val/mindy_kaling").iterdir())[:3]
    enroll(ws, [("mindy", f) for f in val])
    config.name = "gamma"
    train(ws, config)
    # the fleet (its inventory: start_cameras): heartbeats, a snapshot, a deployment on record
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 200)
    ok, frame = cap.read()
    cap.release()
    if ok:
        small = cv2.resize(frame, (320, 180))
        snapshots.save_snapshot(ws, "lobby-cam", cv2.imencode(".jpg", small)[1].tobytes())
    st = records.open_store(ws)
    for host, fps in (("lobby-cam", 96.0), ("door-cam", 88.5), ("dock-jetson", 31.2)):
        records.record_deployment(
            st,
            "a1b2c3d4e5f6",
            {
                "host": host,
                "model": first.model,
                "old_version": None,
                "new_version": first.version,
                "result": "ok",
                "seconds": 2.4,
                "method": "ssh",
            },
        )
        records.record_heartbeat(st, host, first.model, first.version, fps, "10.0.0.1")
    accounts.add_user(st, ADMIN[0], "admin", ADMIN[1])
    st.close()


def start_cameras(root: Path) -> list:
    """Three real sshd "cameras" on 127.0.0.1 in the workspace's inventory (a client key and
    known_hosts made here); the dock's restart command takes a few seconds, so a deployment
    started from the console is seen mid-run. The caller stops them."""
    import yaml
    from testkit import keygen, known_hosts_for, start_sshd, write_inventory

    base = root.parent / f"{root.name}-cameras"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    key = keygen(base / "id_ed25519")
    devices: dict = {}
    try:
        for name in ("lobby-cam", "door-cam", "dock-jetson"):
            devices[name] = start_sshd(name, base / name, key)
    except Exception:
        for dev in devices.values():
            dev.stop()
        raise
    slow = f'sleep 6; echo "$FACEFLEET_VERSION" >> {devices["dock-jetson"].restarts}'
    groups = {
        "entrance": {n: devices[n] for n in ("lobby-cam", "door-cam")},
        "warehouse": {"dock-jetson": devices["dock-jetson"]},
    }
    write_inventory(root / "inventory.yaml", groups, key, {"dock-jetson": {"facefleet_restart": slow}})
    known = known_hosts_for(base / "known_hosts", devices.values())
    cfg_path = root / "facefleet.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    cfg["fleet"] = {**cfg.get("fleet", {}), "inventory": "inventory.yaml", "known_hosts": str(known)}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return list(devices.values())


def shoot(root: Path, out: Path) -> list[Path]:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from webkit import chromium, serving

    saved = []
    with serving(root) as url, chromium("1280,900", "--hide-scrollbars") as driver:
        out.mkdir(parents=True, exist_ok=True)

        def grab(name: str, path: str, height: int | None = None) -> None:
            driver.get(url + path)
            time.sleep(0.6)
            full = driver.execute_script("return document.documentElement.scrollHeight")
            # the whole shot in the viewport first, so that lazy thumbnails below the fold load
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": min(height or full, 1800), "deviceScaleFactor": 1, "mobile": False},
            )
            driver.execute_script(
                "return Promise.all(Array.from(document.images).map(i => i.complete ? 0 :"
                " new Promise(r => { i.onload = i.onerror = r; setTimeout(r, 5000); })))"
            )
            time.sleep(0.3)
            target = out / f"{name}.png"
            driver.save_screenshot(str(target))
            saved.append(target)

        grab("login", "/login", 620)
        driver.find_element(By.ID, "username").send_keys(ADMIN[0])
        driver.find_element(By.ID, "password").send_keys(ADMIN[1])
        driver.find_element(By.ID, "sign-in").click()
        time.sleep(0.5)
        grab("review", "/review")
        grab("review-candidates", "/review?tab=candidates", 900)
        grab("people", "/people")
        driver.get(url + "/people")
        link = driver.find_element(By.LINK_TEXT, "madonna").get_attribute("href")
        grab("person", link.replace(url, ""))
        grab("models", "/models")
        grab("version", "/models/3", 1300)
        grab("diff", "/models/diff?a=2&b=3", 1200)
        # the slip mended: "mindy" merged into mindy_kaling from her page, which offers the undo
        driver.get(url + "/people")
        driver.find_element(By.LINK_TEXT, "mindy").click()
        form = driver.find_element(By.ID, "merge-form")
        form.find_element(By.NAME, "into").send_keys("mindy_kaling")
        form.find_element(By.ID, "merge").click()
        time.sleep(0.5)
        grab("person-merged", driver.current_url.replace(url, ""), 900)
        grab("fleet", "/fleet")
        grab("events", "/events", 1100)
        # a deployment of @production to every host, caught while the dock's slow restart runs
        driver.get(url + "/fleet")
        form = driver.find_element(By.ID, "deploy-form")
        Select(form.find_element(By.NAME, "alias")).select_by_visible_text("production")
        form.find_element(By.TAG_NAME, "button").click()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if "/fleet/jobs/" not in driver.current_url:
                continue
            try:
                state = driver.find_element(By.ID, "job-state").text
                done = driver.find_elements(By.CSS_SELECTOR, "#job tr.result-ok")
            except StaleElementReferenceException:  # the fragment was swapped as it was read
                continue
            if state in ("done", "failed") or (state == "running" and len(done) >= 2):
                break
        grab("deploy-job", driver.current_url.replace(url, ""), 560)
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "console")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the demo workspace here")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="console-demo-") as tmp:
        root = args.keep or Path(tmp) / "ws"
        if not (root / "facefleet.yaml").exists():
            build(root)
        cameras = start_cameras(root)
        try:
            for path in shoot(root, args.out):
                print(path)
        finally:
            for cam in cameras:
                cam.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
