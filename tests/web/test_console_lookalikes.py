"""The version page's look-alikes in a real headless Chromium against a real ``facefleet serve``:
ORL's 40 subjects enrolled (photos 1-7), subject 1 a second time under another name (photos
8-10), trained. The page shows that pair first, both ways, with a face of each; a reviewer
accepts it as two people and takes that back, follows the link to the person's page, merges
the two names there and undoes the merge. A viewer may do none of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_helpers import PASSWORDS
from selenium.webdriver.common.by import By
from test_console_browser import sign_in, wait
from webkit import serving


@pytest.fixture(scope="module")
def twice(tmp_path_factory, faces_dir):
    # enrolled here, not cloned: a clone's store names photos kept in the original workspace,
    # which the console refuses to serve
    from facefleet.enrol import enroll, plan_folder
    from facefleet.registry.keys import generate_keypair
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import train
    from facefleet.web.console import accounts
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("twice") / "ws")
    items = [(f"orl_{n}", p) for n, p in plan_folder(faces_dir / "orl") if int(p.stem) <= 7]
    items += [("orl_s1_again", faces_dir / "orl" / "s1" / f"{i}.pgm") for i in (8, 9, 10)]
    assert all(o.accepted for o in enroll(ws, items).outcomes)
    generate_keypair(ws.keys_dir)
    config = load_config(workspace_train=None)
    config.search.method = "centroid"
    result = train(ws, config)
    with ws.open_store() as st:
        accounts.add_user(st, "vic", "viewer", PASSWORDS["vic"])
        accounts.add_user(st, "rita", "reviewer", PASSWORDS["rita"])
    with serving(ws.root, tmp_path_factory.mktemp("twice-serve") / "serve.log") as url:
        yield ws, result, url


def test_the_version_page_shows_the_person_enrolled_twice(browser, twice):
    ws, result, url = twice
    assert result.lookalikes, "training found no look-alikes"
    sign_in(browser, url, "vic", f"/models/{result.version}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#lookalikes tbody tr")
    assert len(rows) == len(result.lookalikes)
    first_two = {
        tuple(r.find_elements(By.TAG_NAME, "td")[i].text.split(" (")[0] for i in (0, 2)) for r in rows[:2]
    }
    assert first_two == {("orl_s1", "orl_s1_again"), ("orl_s1_again", "orl_s1")}
    for row, la in zip(rows, result.lookalikes):
        cells = row.find_elements(By.TAG_NAME, "td")
        assert cells[0].text == la.person and cells[2].text.startswith(la.taken_for)
        assert ("(both ways)" in cells[2].text) == la.both_ways
        assert cells[4].text == (f"{la.named} of {la.trials}" if la.named else "no")
        assert row.get_attribute("class") == ("named" if la.named else "near")
        # a face of each, served from the store and really loaded
        imgs = row.find_elements(By.TAG_NAME, "img")
        assert [i.get_attribute("src").rsplit("/", 1)[1] for i in imgs] == [
            f"{la.face}.jpg",
            f"{la.other_face}.jpg",
        ]
    imgs = "[...document.querySelectorAll('#lookalikes img')]"
    loaded = f"return {imgs}.every(i => i.complete && i.naturalWidth > 0)"
    wait(browser).until(lambda d: d.execute_script(loaded))
    with ws.open_store() as st:
        people = {f.id: f.person_name for f in st.faces_by_id([la.face for la in result.lookalikes])}
    assert all(people[la.face] == la.person for la in result.lookalikes)


def test_a_pair_is_accepted_from_the_version_page(browser, twice):
    from console_helpers import signed_in

    from facefleet.train.lookalikes import accepted_pairs

    ws, result, url = twice
    page = f"/models/{result.version}"
    pair = {"orl_s1", "orl_s1_again"}

    def rows():
        out = {}
        for r in browser.find_elements(By.CSS_SELECTOR, "#lookalikes tbody tr"):
            cells = r.find_elements(By.TAG_NAME, "td")
            out[(cells[0].text, cells[2].text.split(" (")[0])] = r
        return out

    # a viewer has no button, and a POST from them is refused
    sign_in(browser, url, "vic", page)
    assert not browser.find_elements(By.CSS_SELECTOR, "#lookalikes form")
    with ws.open_store() as st:
        ids = [st.person(n).id for n in sorted(pair)]
    client, token = signed_in(url, "vic")
    try:
        form = {"person": ids[0], "other": ids[1], "version": str(result.version), "csrf": token}
        assert client.post("/lookalikes/accept", data=form).status_code == 403
    finally:
        client.close()
    with ws.open_store() as st:
        assert accepted_pairs(st) == set()
    # a reviewer accepts the pair on one row: both ways are marked, nothing else
    sign_in(browser, url, "rita", page)
    rows()[("orl_s1_again", "orl_s1")].find_element(By.TAG_NAME, "button").click()
    wait(browser).until(lambda d: "accepted as two people" in d.page_source)
    with ws.open_store() as st:
        assert accepted_pairs(st) == {frozenset(pair)}
    for (a, b), row in rows().items():
        accepted = {a, b} == pair
        assert ("accepted" in row.get_attribute("class").split()) == accepted
        assert row.find_elements(By.TAG_NAME, "td")[6].text.startswith("accepted") == accepted
    # and takes it back
    rows()[("orl_s1", "orl_s1_again")].find_element(By.TAG_NAME, "button").click()
    wait(browser).until(lambda d: "no longer accepted as two people" in d.page_source)
    with ws.open_store() as st:
        assert accepted_pairs(st) == set()
    assert not any("accepted" in r.get_attribute("class") for r in rows().values())


def test_the_pair_is_merged_from_the_person_page(browser, twice):
    from console_helpers import signed_in

    ws, result, url = twice
    with ws.open_store() as st:
        again = st.person("orl_s1_again")
    # a viewer sees no merge form and is refused one
    sign_in(browser, url, "vic", f"/people/{again.id}")
    assert not browser.find_elements(By.ID, "merge-form")
    client, token = signed_in(url, "vic")
    try:
        r = client.post(f"/people/{again.id}/merge", data={"into": "orl_s1", "csrf": token})
        assert r.status_code == 403
    finally:
        client.close()
    # a reviewer follows the look-alikes' link and merges
    sign_in(browser, url, "rita", f"/models/{result.version}")
    browser.find_element(By.LINK_TEXT, "orl_s1_again").click()
    wait(browser).until(lambda d: d.current_url.endswith(f"/people/{again.id}"))
    form = browser.find_element(By.ID, "merge-form")
    form.find_element(By.NAME, "into").send_keys("orl_s1")
    form.find_element(By.ID, "merge").click()
    wait(browser).until(lambda d: "merged orl_s1_again into orl_s1" in d.page_source)
    with ws.open_store() as st:
        assert st.find_person("orl_s1_again") is None
        s1 = st.person("orl_s1")
        assert len(st.faces(person=s1.id)) == 10
    assert browser.current_url.split("?")[0].endswith(f"/people/{s1.id}")
    # the version page still lists the pair it was trained with, now without a link for the
    # name that went
    browser.get(f"{url}/models/{result.version}")
    assert not browser.find_elements(By.LINK_TEXT, "orl_s1_again")
    assert browser.find_elements(By.LINK_TEXT, "orl_s1")


def test_a_merge_is_undone_from_the_person_page(browser, twice):
    from console_helpers import signed_in

    from facefleet.store import merges

    ws, result, url = twice
    with ws.open_store() as st:
        if st.find_person("orl_s1_again"):  # run alone: merge here as the test above does
            merges.merge(st, "orl_s1_again", "orl_s1")
        s1 = st.person("orl_s1")
        (m,) = merges.merges(st, held_by=s1.id)
    # a viewer sees what was merged in, but no undo, and is refused one
    sign_in(browser, url, "vic", f"/people/{s1.id}")
    listed = browser.find_element(By.CSS_SELECTOR, f"#merged li[data-merge='{m.id}']")
    assert listed.text.startswith("orl_s1_again") and "3 face(s)" in listed.text
    assert not listed.find_elements(By.TAG_NAME, "button")
    client, token = signed_in(url, "vic")
    try:
        assert client.post(f"/merges/{m.id}/undo", data={"csrf": token}).status_code == 403
        rita, rita_token = signed_in(url, "rita")
        try:  # the right role without the page's token is refused too
            assert rita.post(f"/merges/{m.id}/undo", data={"csrf": "x"}).status_code == 403
        finally:
            rita.close()
    finally:
        client.close()
    sign_in(browser, url, "rita", f"/people/{s1.id}")
    browser.find_element(By.CSS_SELECTOR, f"#merged li[data-merge='{m.id}'] button").click()
    wait(browser).until(lambda d: "orl_s1_again is back: 3 face(s) moved back" in d.page_source)
    with ws.open_store() as st:
        again = st.person("orl_s1_again")
        back = st.faces(person=again.id)
        # the very faces enrolled under that name (their copies are kept in its folder)
        assert len(back) == 3 and len(st.faces(person=s1.id)) == 7
        assert all(Path(f.image_path).parent == ws.few_shot_dir / again.id for f in back)
    assert browser.current_url.split("?")[0].endswith(f"/people/{again.id}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#person-faces figure")) == 3
    # taken back once; the page no longer offers it
    browser.get(f"{url}/people/{s1.id}")
    assert not browser.find_elements(By.ID, "merged")
