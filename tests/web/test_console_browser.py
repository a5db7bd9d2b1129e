"""The web console in a real headless Chromium against a real ``facefleet serve``: sign in,
review the pbs clip's unknown clusters (name one, "not <person>" another) and check the store,
enrol by uploading photos (rejections with reasons), promote as an admin with a reason."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from console_helpers import PASSWORDS
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

NEW_NAME = "pbs_guest"
NOT_NAME = "obama"


def wait(driver, timeout: float = 30.0) -> WebDriverWait:
    # htmx replaces elements in place: a reference may go stale between two looks
    return WebDriverWait(
        driver, timeout, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    )


def sign_in(driver, url: str, name: str, next_path: str = "/review") -> None:
    driver.delete_all_cookies()
    driver.get(url + next_path)
    wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    assert "/login" in driver.current_url
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    driver.find_element(By.ID, "sign-in").click()
    wait(driver).until(lambda d: "/login" not in d.current_url)


def snapshot_store(ws):
    """Every face's (person, status) and every negative: what a label may change."""
    with ws.open_store() as st:
        faces = {f.id: (f.person_name, f.status) for f in st.faces()}
        negs = {
            (int(r[0]), r[1])
            for r in st.conn.execute(
                "SELECT n.face_id, p.name FROM negatives n JOIN people p ON p.id = n.person_id"
            )
        }
    return faces, negs


def test_sign_in_shows_the_review_page(browser, server):
    browser.delete_all_cookies()
    browser.get(server + "/login")
    browser.find_element(By.ID, "username").send_keys("rita")
    browser.find_element(By.ID, "password").send_keys("wrong password")
    browser.find_element(By.ID, "sign-in").click()
    assert (
        "wrong name or password"
        in wait(browser).until(ec.presence_of_element_located((By.ID, "login-error"))).text
    )
    sign_in(browser, server, "rita")
    assert browser.current_url.endswith("/review")
    assert browser.find_elements(By.CSS_SELECTOR, "article.cluster")
    cookie = browser.get_cookie("facefleet_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # thumbnails are real images served to the signed-in browser
    script = (
        "return Array.from(document.querySelectorAll('article.cluster img')).slice(0, 3)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    wait(browser).until(lambda d: d.execute_script(script))


def test_review_names_one_cluster_and_marks_another_not(browser, server, console_ws):
    from facefleet.curate import clusters as cl
    from facefleet.train.pipeline import current_embedder_id

    emb = current_embedder_id(console_ws)
    with console_ws.open_store() as st:
        first, second = cl.clusters(st, emb)[:2]
        named_ids = {f.id for f in first.faces}
        not_ids = {f.id for f in second.faces}
    faces_before, negs_before = snapshot_store(console_ws)

    sign_in(browser, server, "rita")
    card = browser.find_element(By.ID, f"cluster-{first.id}")
    name = card.find_element(By.CSS_SELECTOR, "input.name")
    name.send_keys(NEW_NAME)
    assert card.find_element(By.CSS_SELECTOR, ".newhint").is_displayed()  # not an existing person
    card.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait(browser).until(lambda d: f"named {NEW_NAME}" in d.find_element(By.ID, f"cluster-{first.id}").text)
    # the keyboard: j moves to the next cluster, x asks whom it is not, Enter sends it
    card2 = browser.find_element(By.ID, f"cluster-{second.id}")
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(10):
        if "current" in card2.get_attribute("class"):
            break
        body.send_keys("j")
    assert "current" in card2.get_attribute("class")
    body.send_keys("x")
    active = browser.switch_to.active_element
    assert active == card2.find_element(By.CSS_SELECTOR, "input.name")
    active.send_keys(NOT_NAME + "\n")
    wait(browser).until(
        lambda d: f"marked not {NOT_NAME}" in d.find_element(By.ID, f"cluster-{second.id}").text
    )

    faces_after, negs_after = snapshot_store(console_ws)
    expected = dict(faces_before)
    for i in named_ids:
        expected[i] = (NEW_NAME, "selected")
    assert faces_after == expected  # the "not" left statuses alone, nothing else moved
    assert negs_after == negs_before | {(i, NOT_NAME) for i in not_ids}
    with console_ws.open_store() as st:
        assert cl.cluster(st, emb, first.id).state == "labelled"
        assert cl.cluster(st, emb, second.id).state == "open"
    # the page now shows the remaining cluster with its "not" badge
    browser.get(server + "/review")
    assert f"not {NOT_NAME}" in browser.find_element(By.ID, f"cluster-{second.id}").text
    assert not browser.find_elements(By.ID, f"cluster-{first.id}")


def test_review_offers_the_person_a_cluster_looks_like(browser, server, console_ws):
    """One face of a cluster named on its own (as on the candidates tab): the Candidates tab
    then captions the cluster's other faces "like door_guest", the cluster's card shows that
    person's face and "It is door_guest", and one click names the rest."""
    from facefleet.curate import clusters as cl
    from facefleet.curate import labels
    from facefleet.train.pipeline import current_embedder_id

    emb = current_embedder_id(console_ws)
    with console_ws.open_store() as st:
        target = next(c for c in cl.clusters(st, emb) if len(c.faces) >= 3)
        first, *rest = sorted(f.id for f in target.faces)
        labels.label(st, [first], "door_guest")
        hint = cl.looks_like(st, emb, [target.id])[target.id][0]
    assert hint.person == "door_guest" and hint.face_id == first

    sign_in(browser, server, "rita", "/review?tab=candidates")
    shown = {  # the cluster's other faces on the tab (near-duplicates are left out)
        int(tile.find_element(By.TAG_NAME, "input").get_attribute("value")): tile.find_element(
            By.CSS_SELECTOR, ".cap"
        )
        for tile in browser.find_elements(By.CSS_SELECTOR, ".candidates label.face")
    }
    caps = [shown[i] for i in rest if i in shown]
    assert caps and {e.text for e in caps} == {"like door_guest"}
    titled = r"looks like door_guest \(distance 0\.\d\d\)"
    assert all(re.match(titled, e.get_attribute("title")) for e in caps)
    browser.get(server + "/review")
    card = browser.find_element(By.ID, f"cluster-{target.id}")
    looks = card.find_element(By.CSS_SELECTOR, ".looks")
    assert f"looks like door_guest (distance {hint.distance:.2f})" in looks.text
    img = looks.find_element(By.TAG_NAME, "img")
    assert img.get_attribute("src").endswith(f"/thumbs/{first}.jpg")
    wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth > 0", img))
    looks.find_element(By.CSS_SELECTOR, "button.looks-yes").click()
    wait(browser).until(lambda d: "named door_guest" in d.find_element(By.ID, f"cluster-{target.id}").text)
    with console_ws.open_store() as st:
        assert {(f.person_name, f.status) for f in st.faces_by_id(rest)} == {("door_guest", "selected")}
        assert cl.cluster(st, emb, target.id).state == "labelled"


def test_review_says_what_the_reviewed_strangers_do(browser, server, console_ws):
    from facefleet.train.pipeline import current_embedder_id

    emb = current_embedder_id(console_ws)
    st = console_ws.open_store()
    try:
        n = st.stranger_count(emb)
        assert n == len(st.stranger_set(emb))
    finally:
        st.close()
    sign_in(browser, server, "vic", "/review")
    text = browser.find_element(By.ID, "strangers-reviewed").text
    assert text.startswith(f"{n} face(s) reviewed as strangers")
    assert "from 499 they set the next model's operating point alone (target 1.00 %)" in text


def test_reviewer_enrols_by_upload_and_sees_rejections(browser, server, console_ws, shared_data, tmp_path):
    person = shared_data / "faces/five_celebrity/train/ben_afflek"
    photos = sorted(p for p in person.iterdir() if p.is_file())
    junk = tmp_path / "notes.jpg"
    junk.write_text("this is not a photo")
    group = shared_data / "faces/examples/two_people.jpg"
    with console_ws.open_store() as st:
        images_before = st.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    sign_in(browser, server, "rita", "/people")
    browser.find_element(By.ID, "enrol-name").send_keys("Ben Affleck")
    browser.find_element(By.ID, "enrol-photos").send_keys("\n".join(str(p) for p in [*photos, group, junk]))
    browser.find_element(By.ID, "enrol-submit").click()
    table = wait(browser, 240).until(ec.presence_of_element_located((By.ID, "outcomes")))
    rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: (
            r.find_elements(By.TAG_NAME, "td")[1].text,
            r.find_elements(By.TAG_NAME, "td")[2].text,
        )
        for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert len(rows) == len(photos) + 2
    assert rows["two_people.jpg"][0] == "rejected"
    assert rows["two_people.jpg"][1].startswith("several faces (2)")
    assert rows["notes.jpg"][0] == "rejected" and "not an image" in rows["notes.jpg"][1]
    accepted = [f for f, (result, _) in rows.items() if result == "accepted"]
    assert len(accepted) >= len(photos) - 2
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Ben Affleck")
    with console_ws.open_store() as st:
        ben = st.person("Ben Affleck")
        assert len(st.faces(person=ben.id, status="in_use")) == len(accepted)
        images_after = st.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        junk_sha = __import__("hashlib").sha256(junk.read_bytes()).hexdigest()
        assert (
            st.conn.execute("SELECT COUNT(*) FROM rejections WHERE sha256 = ?", (junk_sha,)).fetchone()[0]
            == 0
        )
    assert images_after == images_before + len(accepted)
    assert not list((console_ws.cache_dir / "uploads").iterdir())  # temporary uploads are gone


def test_admin_promotes_with_a_reason(browser, server, console_ws):
    from facefleet.registry.versions import audit_log, list_versions, resolve_version

    target = next(i.version for i in list_versions(console_ws) if "validated" not in i.aliases)
    moves = len(audit_log(console_ws))
    sign_in(browser, server, "ada", "/models")
    assert browser.find_element(By.ID, f"version-{target}")
    Select(browser.find_element(By.ID, "promote-version")).select_by_value(str(target))
    Select(browser.find_element(By.ID, "promote-alias")).select_by_visible_text("validated")
    # the reason is required: the browser will not send the form without it
    browser.find_element(By.ID, "promote-submit").click()
    time.sleep(0.3)
    assert len(audit_log(console_ws)) == moves
    browser.find_element(By.ID, "promote-why").send_keys("checked on the pbs clip")
    browser.find_element(By.ID, "promote-submit").click()
    wait(browser).until(lambda d: f"@validated now v{target}" in d.page_source)
    entry = audit_log(console_ws)[-1]
    assert len(audit_log(console_ws)) == moves + 1
    assert (entry["alias"], entry["to_version"], entry["action"]) == ("validated", target, "promote")
    assert entry["why"] == "checked on the pbs clip" and entry["user"] == "ada (console)"
    assert "validated" in resolve_version(console_ws, target).aliases
    assert "checked on the pbs clip" in browser.find_element(By.ID, "history").text


def test_a_version_says_what_its_stranger_estimate_rests_on(browser, server, console_ws):
    from facefleet.registry.versions import resolve_version
    from facefleet.train.model import far_line

    metrics = resolve_version(console_ws, 1).metrics
    sign_in(browser, server, "vic", "/models/1")
    text = browser.find_element(By.ID, "estimate").text
    assert text == far_line(metrics) and text.startswith("strangers named (estimate): ")
    assert f"{int(metrics['far_trials'])} trials of enrolled people played as strangers" in text
    # the thresholds are margin scores, said so, with the numbers the bundle decides with
    head = browser.find_element(By.CSS_SELECTOR, "#thresholds th:nth-child(2)").text
    rule = browser.find_element(By.ID, "threshold-rule").text
    assert head == "score threshold" and "minus 0.6 x its distance to the next person" in rule, rule


def test_admin_deploys_to_a_group_and_watches_it(browser, server, console_ws, console_devices):
    from facefleet.fleet import status
    from facefleet.layout import CURRENT, link_target

    devices, _ = console_devices
    sign_in(browser, server, "ada", "/fleet")
    form = browser.find_element(By.ID, "deploy-form")
    Select(form.find_element(By.NAME, "alias")).select_by_visible_text("production")
    Select(form.find_element(By.NAME, "group")).select_by_visible_text("cams")
    form.find_element(By.TAG_NAME, "button").click()
    wait(browser).until(lambda d: "/fleet/jobs/" in d.current_url)
    # the job fragment polls every second until the deployment ends
    wait(browser, 120).until(lambda d: d.find_element(By.ID, "job-state").text in ("done", "failed"))
    job = browser.find_element(By.ID, "job").text
    assert browser.find_element(By.ID, "job-state").text == "done", job
    for name, dev in devices.items():
        assert name in job
        assert link_target(dev.models_dir / "face_model" / CURRENT) is not None
    rows = {r.host: r for r in status.fleet_status(console_ws)}
    assert all(rows[name].last_result == "ok" for name in devices)
    browser.get(server + "/fleet")
    assert "gate-cam" in browser.page_source and "cams" in browser.page_source


@pytest.mark.parametrize(
    "page", ["/review", "/review?tab=candidates", "/people", "/models", "/models/1", "/fleet", "/events"]
)
def test_every_page_renders_for_a_viewer(browser, server, page):
    sign_in(browser, server, "vic", page)
    assert browser.find_element(By.TAG_NAME, "h1").text
    assert "Traceback" not in browser.page_source
    # read-only: no forms that change anything besides sign-out
    posts = [f.get_attribute("action") for f in browser.find_elements(By.CSS_SELECTOR, "form[method=post]")]
    assert all(a.endswith("/logout") for a in posts), posts


def test_no_asset_comes_from_elsewhere(browser, server):
    sign_in(browser, server, "ada", "/review")
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server) for u in urls), urls
    assert browser.execute_script("return typeof htmx") == "object"
    assert Path(__file__).parents[2].joinpath("facefleet/web/console/static/htmx-LICENSE.txt").is_file()
