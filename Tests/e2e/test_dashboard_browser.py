"""The dashboard in a real headless Chromium, driven by Selenium, end to end.

Screenshots of every page go to .test-artifacts/screenshots/ (ignored by git).
"""

import base64
import datetime
import hashlib
import hmac
import shutil
import struct
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT

SHOTS = ROOT / ".test-artifacts" / "screenshots"
PASSWORD = "a long enough password"


def find_chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if not browser or not Path(driver).exists():
        pytest.fail("chromium and chromium-driver are required (scripts/bootstrap installs them)")
    return browser, driver


@pytest.fixture
def browser():
    binary, driver_path = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


class Dashboard:
    def __init__(self, driver, keyway):
        self.driver = driver
        self.keyway = keyway
        SHOTS.mkdir(parents=True, exist_ok=True)

    def open(self, path):
        self.driver.get(self.keyway.base + path)

    def settled(self):
        """Waits until the current page has finished loading, so no element found next belongs to the last one."""
        WebDriverWait(self.driver, 10).until(lambda driver: driver.execute_script("return document.readyState") == "complete")

    def click(self, css):
        """Clicks a link or submit button and waits for the next page to replace this one and finish loading."""
        self.settled()
        old_page = self.driver.find_element(By.TAG_NAME, "html")
        try:
            self.driver.find_element(By.CSS_SELECTOR, css).click()
        except WebDriverException as error:
            # Chromedriver sometimes reports on the clicked node after the navigation it caused has
            # already replaced it. The click happened; the wait below fails if it did not.
            if "does not belong to the document" not in str(error):
                raise
        WebDriverWait(self.driver, 10).until(lambda driver: self.replaced(old_page))
        self.settled()

    @staticmethod
    def replaced(element) -> bool:
        """Whether `element` left the document: stale, or (Chromedriver racing a navigation) no longer in it."""
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise

    def type(self, css, text):
        self.settled()
        field = self.driver.find_element(By.CSS_SELECTOR, css)
        field.clear()
        field.send_keys(text)

    def text(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def shot(self, name):
        assert self.driver.title.endswith("· Keyway"), f"page without a sensible title: {self.driver.title!r}"
        # No key may be kept on disk, not even in a picture: mask shown keys first.
        self.driver.execute_script(
            "document.querySelectorAll('input.secret').forEach(f => { f.value = f.value.slice(0, f.value.indexOf('_', 3) + 1) + '•'.repeat(30); })"
        )
        self.driver.save_screenshot(str(SHOTS / f"{name}.png"))

    def sign_up(self, company, email):
        """Signs a new owner up and waits for Settings → API Keys."""
        self.open("/dashboard/signup")
        self.type("#company", company)
        self.type("#email", email)
        self.type("#password", PASSWORD)
        self.click("#sign-up")
        self.wait_for_path("/dashboard/settings/api-keys")

    def wait_for_path(self, path):
        WebDriverWait(self.driver, 10).until(lambda driver: driver.current_url.split("?")[0].endswith(path))


def api(keyway, method, path, key, body=None):
    return keyway.request(method, path, key, body)


def test_a_new_customer_from_sign_up_to_sign_out(keyway, browser):
    keyway.start(KEYWAY_EGRESS_IPS="203.0.113.7,203.0.113.8")
    page = Dashboard(browser, keyway)

    # Sign up.
    page.open("/dashboard")
    page.wait_for_path("/dashboard/signin")
    page.click("a[href='/dashboard/signup']")
    page.type("#company", "Acme Rockets")
    page.type("#email", "founder@acme.test")
    page.type("#password", "short")
    page.click("#sign-up")
    assert "Use at least" in page.text("#password-error"), "the error is next to the field"
    page.shot("signup-error")
    page.type("#password", PASSWORD)
    page.click("#sign-up")
    page.wait_for_path("/dashboard/settings/api-keys")
    assert "No development key yet." in page.text("#development-none")
    page.shot("api-keys-empty")

    # Generate the development key and read it from the page.
    page.click("#development-generate")
    dev_key = page.driver.find_element(By.CSS_SELECTOR, "#development-key").get_attribute("value")
    assert dev_key.startswith("kw_dev_") and len(dev_key) == 43
    assert "will not be shown again" in page.text("#development-card")
    page.shot("api-keys-generated")

    # Create two users with it through the HTTP API.
    for username in ("ada@example.com", "grace@example.com"):
        status, _, body = api(keyway, "POST", "/users", dev_key, {"username": username})
        assert status == 200, body

    # They are in Users under Development, not under Production.
    page.click("nav a[href='/dashboard/users']")
    page.wait_for_path("/dashboard/users")
    assert "2 users in development." in page.text("#user-count")
    assert "ada@example.com" in page.driver.page_source and "grace@example.com" in page.driver.page_source
    page.shot("users-development")
    page.click("a[href='/dashboard/users/" + api(keyway, "GET", "/users/ada@example.com", dev_key)[2]["userId"] + "?environment=development']")
    assert "ada@example.com" in page.text("h1")
    page.shot("user-detail")
    page.open("/dashboard/users?environment=development")
    page.click("#switch-production")
    assert "0 users in production." in page.text("#user-count")
    assert "ada@example.com" not in page.driver.page_source
    page.shot("users-production")

    # Regenerate the development key, confirming.
    page.click("nav a[href='/dashboard/settings/api-keys']")
    page.click("#development-generate")
    assert "stops working immediately" in page.text("#development-card")
    page.shot("api-keys-confirm-regenerate")
    page.click("#development-confirm")
    new_dev_key = page.driver.find_element(By.CSS_SELECTOR, "#development-key").get_attribute("value")
    assert new_dev_key != dev_key
    status, _, body = api(keyway, "GET", "/whoami", dev_key)
    assert status == 401 and body["code"] == "revoked_api_key", body
    assert api(keyway, "GET", "/whoami", new_dev_key)[0] == 200

    # Reload: only the hint is shown.
    page.driver.refresh()
    try:
        page.driver.switch_to.alert.accept()  # a resubmission prompt, if the browser shows one
    except Exception:
        pass
    assert new_dev_key not in page.driver.page_source
    page.open("/dashboard/settings/api-keys")
    assert new_dev_key not in page.driver.page_source and dev_key not in page.driver.page_source
    assert page.text("#development-hint").endswith(new_dev_key[-4:])
    assert api(keyway, "GET", "/whoami", new_dev_key)[0] == 200, "reloading regenerated nothing"

    # Generate the production key: the password is asked again.
    page.click("#production-generate")
    page.type("#production-password", "wrong password!")
    page.click("#production-confirm")
    assert "wrong" in page.text("#production-password-error")
    page.type("#production-password", PASSWORD)
    page.shot("api-keys-production-password")
    page.click("#production-confirm")
    prod_key = page.driver.find_element(By.CSS_SELECTOR, "#production-key").get_attribute("value")
    assert prod_key.startswith("kw_prod_")
    assert api(keyway, "GET", "/whoami", prod_key)[2]["environment"] == "production"
    assert api(keyway, "GET", "/users/ada@example.com", prod_key)[0] == 404

    # IP addresses and account pages.
    page.click("nav a[href='/dashboard/settings/ip-addresses']")
    assert "203.0.113.7" in page.driver.find_element(By.CSS_SELECTOR, "#egress").get_attribute("value")
    page.shot("ip-addresses")
    page.click("nav a[href='/dashboard/settings/account']")
    page.shot("account")

    # Readable at phone width: nothing overflows sideways.
    page.driver.set_window_size(390, 844)
    for path in ("/dashboard/settings/api-keys", "/dashboard/users", "/dashboard/settings/ip-addresses"):
        page.open(path)
        overflow = page.driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways at phone width"
    page.open("/dashboard/settings/api-keys")
    page.shot("api-keys-phone")
    page.driver.set_window_size(1280, 900)

    # Sign out; pages then redirect to sign-in.
    page.click("#sign-out")
    page.wait_for_path("/dashboard/signin")
    assert "You are signed out." in page.driver.page_source
    for path in ("/dashboard/settings/api-keys", "/dashboard/users", "/dashboard/settings/account"):
        page.open(path)
        page.wait_for_path("/dashboard/signin")
    page.shot("signin")

    # Sign in again with the keyboard alone.
    page.open("/dashboard/signin")
    # The email field is reachable with Tab alone (autofocus usually puts the focus there already).
    for _ in range(12):
        if page.driver.switch_to.active_element.get_attribute("id") == "email":
            break
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
    email = page.driver.switch_to.active_element
    assert email.get_attribute("id") == "email", "Tab never reached the email field"
    email.send_keys("founder@acme.test", Keys.TAB)
    page.driver.switch_to.active_element.send_keys(PASSWORD, Keys.ENTER)
    page.wait_for_path("/dashboard/settings/api-keys")
    assert page.text("#development-hint").endswith(new_dev_key[-4:])


def test_the_frontend_example_reads_me_across_origins(keyway, browser, tmp_path):
    """docs/examples/frontend.html, served from another origin, calls /me with a user token."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ROOT / "docs" / "examples"))
    handler.log_message = lambda *args: None
    page_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    page_origin = f"http://127.0.0.1:{page_server.server_address[1]}"
    try:
        account, dev, _ = keyway.account_with_keys()
        keyway.start()
        assert keyway.request("POST", "/users", dev, {"username": "browser-user"})[0] == 200
        token = keyway.request("GET", "/users/browser-user/token", dev)[2]["token"]
        url = f"{page_origin}/frontend.html#keyway={keyway.base}&token={token}"

        # Not yet allowed: the browser blocks the response.
        browser.get(url)
        WebDriverWait(browser, 10).until(lambda d: "Loading" not in d.find_element(By.ID, "status").text)
        assert "Blocked" in browser.find_element(By.ID, "status").text

        keyway.cli("origins", "set", "--account", account, "--environment", "development", page_origin)
        browser.get("about:blank")
        browser.get(url)
        WebDriverWait(browser, 10).until(lambda d: "Loading" not in d.find_element(By.ID, "status").text)
        assert browser.find_element(By.ID, "status").text == "Signed in as browser-user"

        # A secret key in the page is refused, and says why.
        browser.get("about:blank")
        browser.get(f"{page_origin}/frontend.html#keyway={keyway.base}&token={dev}")
        WebDriverWait(browser, 10).until(lambda d: "Loading" not in d.find_element(By.ID, "status").text)
        assert "secret_key_not_accepted" in browser.find_element(By.ID, "status").text
    finally:
        page_server.shutdown()


def test_rolling_a_key_keeps_the_old_one_working_until_its_grace_ends(keyway, browser):
    keyway.start()
    page = Dashboard(browser, keyway)
    page.sign_up("Roll Co", "owner@roll.test")
    page.click("#development-generate")
    old_key = page.driver.find_element(By.CSS_SELECTOR, "#development-key").get_attribute("value")
    assert api(keyway, "GET", "/whoami", old_key)[0] == 200

    # Roll… with a short custom grace.
    page.open("/dashboard/settings/api-keys")
    page.click("#development-roll")
    assert "Keep the current key" in page.text("#development-card")
    page.driver.find_element(By.CSS_SELECTOR, "#development-grace-custom").click()
    page.type("#development-custom-grace", "6s")
    page.shot("api-keys-roll")
    page.click("#development-roll-confirm")
    new_key = page.driver.find_element(By.CSS_SELECTOR, "#development-key").get_attribute("value")
    assert new_key.startswith("kw_dev_") and new_key != old_key
    assert old_key[-4:] in page.text("#development-grace")
    page.shot("api-keys-rolled")

    # Both keys work during the grace; the old one says when it stops.
    status, headers, body = api(keyway, "GET", "/whoami", old_key)
    assert status == 200 and body["expiresAt"] == headers["Keyway-Key-Expires"]
    assert api(keyway, "GET", "/whoami", new_key)[0] == 200
    end = datetime.datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert time.time() < end, "the machine was too slow to see the grace"

    # After it, only the new key; the page's countdown says so without a reload.
    time.sleep(max(0, end - time.time()) + 0.05)
    status, _, body = api(keyway, "GET", "/whoami", old_key)
    assert status == 401 and body["code"] == "revoked_api_key" and body["revocationReason"] == "expired_after_roll", body
    assert api(keyway, "GET", "/whoami", new_key)[0] == 200
    WebDriverWait(page.driver, 5).until(lambda driver: "refused now" in page.text("#development-grace-remaining"))
    page.open("/dashboard/settings/api-keys")
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#development-grace"), "the ended grace is no longer shown"

    # Settings → Audit log records the roll, and the key only by hint and hash.
    page.click("nav.tabs a[href='/dashboard/settings/audit-log']")
    assert "key.rolled" in page.text("#audit-entries") and "key.generated" in page.text("#audit-entries")
    assert old_key not in page.driver.page_source and new_key not in page.driver.page_source
    page.shot("audit-log")


def test_webhooks_are_added_and_followed_from_settings(keyway, browser, tmp_path):
    from test_webhooks import EGRESS, SERVER_ENV, Receiver

    folder = tmp_path / "receiver"
    folder.mkdir()
    receiver = Receiver(folder)
    try:
        keyway.start(**SERVER_ENV)
        page = Dashboard(browser, keyway)
        page.sign_up("Hook Co", "owner@hook.test")

        # Settings → Webhooks: a development endpoint for key events.
        page.click("nav.tabs a[href='/dashboard/settings/webhooks']")
        assert "No endpoints." in page.text("#development-no-endpoints")
        assert EGRESS in page.text("main"), "the page says where deliveries come from"
        page.type("#development-webhook-url", receiver.url("/ok/browser"))
        for box in page.driver.find_elements(By.CSS_SELECTOR, "#development-webhooks input[name=events]"):
            if box.get_attribute("value") != "key.generated":
                box.click()
        page.click("#development-add-webhook")
        secret = page.driver.find_element(By.CSS_SELECTOR, "#webhook-secret").get_attribute("value")
        assert secret.startswith("whsec_")
        assert "shown only once" in page.text("#webhook-secret-reveal")
        receiver.trust("/ok/browser", secret)
        page.shot("webhooks-added")

        # Generating a key sends key.generated; the page lists it once delivered.
        page.open("/dashboard/settings/api-keys")
        page.click("#development-generate")
        receiver.wait_for(lambda: len(receiver.deliveries("/ok/browser")) == 1, 15, "key.generated")
        delivery = receiver.deliveries("/ok/browser")[0]
        assert delivery["verified"] and delivery["peer"] == EGRESS
        message = delivery["headers"]["webhook-id"]
        end = time.monotonic() + 10
        while True:
            page.open("/dashboard/settings/webhooks")
            row = page.driver.find_elements(By.ID, message)
            if row and "succeeded" in row[0].text or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert "key.generated" in row[0].text and "HTTP 200" in row[0].text, row[0].text if row else page.text("main")
        assert secret not in page.driver.page_source, "the secret is shown once"
        page.driver.execute_script("document.getElementById('webhook-deliveries').scrollIntoView({block: 'center'})")
        page.shot("webhooks")

        # Resend: the same message again.
        page.click(f"#{message}-resend")
        receiver.wait_for(lambda: len(receiver.deliveries("/ok/browser")) == 2, 15, "the resent delivery")
        assert receiver.deliveries("/ok/browser")[1]["headers"]["webhook-id"] == message
    finally:
        receiver.stop()


def totp(secret: str, step_offset: int = 0) -> str:
    """RFC 6238 (SHA-1, 30 s, 6 digits) from the base32 secret a page shows, as an authenticator app computes it."""
    key = base64.b32decode(secret.replace(" ", "") + "=" * (-len(secret.replace(" ", "")) % 8))
    counter = int(time.time() // 30) + step_offset
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def test_a_developer_is_invited_turns_on_two_factor_and_reaches_only_development(keyway, browser):
    keyway.start()
    page = Dashboard(browser, keyway)
    page.sign_up("Team Co", "owner@team.test")

    # The owner invites a developer from Settings → Members and gets the link once.
    page.click("nav.tabs a[href='/dashboard/settings/members']")
    page.type("#invite-email", "dev@team.test")
    page.driver.find_element(By.CSS_SELECTOR, "#invite-role-developer").click()
    page.click("#invite")
    link = page.text("#invitation-link")
    assert "/dashboard/join?invitation=" in link
    # The link is a credential: masked before the picture.
    page.driver.execute_script(
        "const link = document.querySelector('#invitation-link'); link.textContent = link.textContent.split('=')[0] + '=' + '•'.repeat(30);"
    )
    page.shot("members-invited")
    page.click("#sign-out")

    # The developer opens it, chooses a password and lands in the account as a developer.
    page.driver.get(link)
    page.settled()
    assert "as Developer" in page.text("#invitation-summary")
    page.type("#password", PASSWORD)
    page.click("#join")
    page.wait_for_path("/dashboard/settings/api-keys")
    assert page.text("#my-role") == "Developer"

    # Two-factor: the secret is read from the page, as someone without a camera would.
    page.open("/dashboard/settings/two-factor")
    page.click("#set-up-two-factor")
    secret = page.text("#totp-secret")
    assert page.driver.find_element(By.CSS_SELECTOR, "#qr-code svg").is_displayed()
    # No secret is kept on disk, not even in a picture.
    page.driver.execute_script(
        "document.querySelector('#totp-secret').textContent = '•••• •••• •••• ••••';"
        "document.querySelector('#qr-code svg').innerHTML = '<rect width=\"100%\" height=\"100%\" fill=\"#ccc\"/>';"
    )
    page.shot("two-factor-setup")
    page.type("#confirm-code", totp(secret))
    page.click("#confirm-two-factor")
    codes = [element.text for element in page.driver.find_elements(By.CSS_SELECTOR, "#recovery-codes code")]
    assert len(codes) == 10
    assert "is <strong>on</strong>" in page.driver.page_source

    # Out and in again: the password, then a code (the next step's: the one just used works once).
    page.click("#sign-out")
    page.open("/dashboard/signin")
    page.type("#email", "dev@team.test")
    page.type("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_path("/dashboard/signin/code")
    page.shot("signin-code")
    page.type("#code", totp(secret, step_offset=1))
    page.click("#verify-code")
    page.wait_for_path("/dashboard/settings/api-keys")

    # The development key is theirs to generate; the production key's button is not there.
    assert not page.driver.find_elements(By.CSS_SELECTOR, "#production-generate")
    assert "does not manage the production key" in page.text("#production-read-only")
    page.click("#development-generate")
    dev_key = page.driver.find_element(By.CSS_SELECTOR, "#development-key").get_attribute("value")
    assert dev_key.startswith("kw_dev_")
    assert api(keyway, "GET", "/whoami", dev_key)[2]["environment"] == "development"
    # And a crafted POST for the production key is refused by the server, not only hidden.
    page.driver.execute_script(
        "const form = document.createElement('form'); form.method = 'post'; form.action = '/dashboard/settings/api-keys/production';"
        "for (const [name, value] of [['csrf', document.querySelector('input[name=csrf]').value], ['current', 'none'], ['confirm', 'yes']]) {"
        "  const input = document.createElement('input'); input.name = name; input.value = value; form.appendChild(input); }"
        "document.body.appendChild(form); form.submit();"
    )
    page.settled()
    assert "does not allow this" in page.driver.page_source
