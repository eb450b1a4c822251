"""The admin web UI (`admin-leptos/`, served under `[admin] web_path`) in
Debian's headless Chromium, driven by Selenium through chromedriver: sign
in with the API token, ban an account, create an invite token and read its
QR code (decoded from a screenshot by zbar), switch a service off and on,
read the DNS records and the doctor's report.
Every screen is photographed at phone (390 x 844) and desktop (1280 x 900)
widths into the test's temporary directory (kept with `cargo xtask e2e
--keep`) and checked for horizontal scrolling.

Each action is checked on the relay through the admin API, not only on the
page. Skipped without chromedriver (Debian package `chromium-driver`),
zbarimg (`zbar-tools`) or the Selenium client.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support import admin_call, admin_token

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SCREENS = ["dashboard", "accounts", "registration", "federation", "queue", "services", "dns"]
PHONE = (390, 844)
DESKTOP = (1280, 900)
WAIT = 20


@pytest.fixture
def browser(tmp_path):
    driver_path = shutil.which("chromedriver")
    chromium = shutil.which("chromium")
    if not driver_path or not chromium:
        pytest.skip("chromedriver or chromium not installed (Debian packages chromium-driver, chromium)")
    if not shutil.which("zbarimg"):
        pytest.skip("zbarimg not installed (Debian package zbar-tools)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(*DESKTOP)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition):
    return WebDriverWait(driver, WAIT).until(condition)


def css(driver, selector):
    return wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, selector)))


def message(driver, contains: str) -> str:
    """Waits until the message area says `contains`; returns its text."""
    wait(driver, ec.text_to_be_present_in_element((By.ID, "message"), contains))
    return driver.find_element(By.ID, "message").text


def open_screen(driver, slug: str):
    css(driver, f'[data-screen="{slug}"]').click()
    wait(driver, lambda d: d.execute_script("return location.hash") == f"#/{slug}")


def no_horizontal_scroll(driver) -> bool:
    return driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1"
    )


def photograph_every_screen(driver, out: Path):
    for width, height in (PHONE, DESKTOP):
        driver.set_window_size(width, height)
        for slug in SCREENS:
            open_screen(driver, slug)
            # Let the screen's first request finish before the picture.
            wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "main[data-busy='true']"))
            path = out / f"admin-{slug}-{width}.png"
            driver.save_screenshot(str(path))
            assert path.stat().st_size > 5_000, path
            assert no_horizontal_scroll(driver), f"{slug} scrolls sideways at {width} px"
    driver.set_window_size(*DESKTOP)


def sign_in(driver, relay):
    url = f"https://{relay.host}:{relay.https_port}/admin/"
    driver.get(url)
    token = css(driver, "#token")
    token.send_keys("0" * 64)
    driver.find_element(By.ID, "sign-in").click()
    message(driver, "not the relay's admin token")
    token = css(driver, "#token")  # a wrong token stays at sign-in
    token.clear()
    token.send_keys(admin_token(relay))
    driver.find_element(By.ID, "sign-in").click()
    css(driver, '[data-screen="accounts"]')


def ban_an_account(driver, relay):
    created = admin_call(relay, "POST", "/admin/accounts")
    assert created["status"] == 201, created
    email = created["body"]["email"]
    open_screen(driver, "accounts")
    search = css(driver, "#accounts-search")
    search.clear()
    search.send_keys(email)
    driver.find_element(By.ID, "accounts-search-button").click()
    css(driver, f'tr[data-account="{email}"]')
    css(driver, f'button[data-action="ban"][data-username="{email}"]').click()
    prompt = wait(driver, ec.alert_is_present())
    prompt.send_keys("banned from the web UI")
    prompt.accept()
    assert "Banned" in message(driver, "Banned")
    blocked = admin_call(relay, "GET", "/admin/blocklist")["body"]["blocked"]
    entry = next(b for b in blocked if b["username"] == email)
    assert entry["reason"] == "banned from the web UI", entry
    css(driver, f'button[data-action="unban"][data-username="{email}"]')
    admin_call(relay, "DELETE", "/admin/accounts", {"username": email})


def create_an_invite_and_read_its_qr(driver, relay, out: Path):
    open_screen(driver, "registration")
    uses = css(driver, "#token-max-uses")
    uses.clear()
    uses.send_keys("3")
    driver.find_element(By.ID, "token-comment").send_keys("for the web UI test")
    driver.find_element(By.ID, "create-token").click()
    message(driver, "Created invite token")
    tokens = admin_call(relay, "GET", "/admin/registration-token")["body"]["tokens"]
    token = next(t for t in tokens if t["comment"] == "for the web UI test")
    assert token["max_uses"] == 3, token
    qr = css(driver, f'svg[data-qr="{token["token"]}"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", qr)
    assert qr.size["width"] >= 200 and abs(qr.size["width"] - qr.size["height"]) <= 1, qr.size
    picture = out / "invite-qr.png"
    qr.screenshot(str(picture))
    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", str(picture)],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert decoded == token["link"], (decoded, token["link"])
    admin_call(relay, "DELETE", "/admin/registration-token", {"token": token["token"]})


def switch_a_service(driver, relay):
    service = "shadowsocks"
    if admin_call(relay, "GET", f"/admin/services/{service}")["body"].get("configured") is not True:
        pytest.skip("the relay under test runs no Shadowsocks proxy")
    open_screen(driver, "services")
    button = f'button[data-service="{service}"]'
    assert css(driver, button).get_attribute("data-status") == "enabled"
    css(driver, button).click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, button).get_attribute("data-status") == "disabled")
    assert admin_call(relay, "GET", f"/admin/services/{service}")["body"]["status"] == "disabled"
    css(driver, button).click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, button).get_attribute("data-status") == "enabled")
    assert admin_call(relay, "GET", f"/admin/services/{service}")["body"]["status"] == "enabled"


def read_the_doctor_report(driver, relay):
    """The DNS screen runs the doctor; its checks match the API's names."""
    open_screen(driver, "dns")
    summary = wait(driver, ec.presence_of_element_located((By.ID, "doctor-summary")))
    shown = {li.get_attribute("data-check"): li.get_attribute("data-status")
             for li in driver.find_elements(By.CSS_SELECTOR, "li[data-check]")}
    assert shown, "the doctor listed no checks"
    assert set(shown.values()) <= {"pass", "warn", "fail"}, shown
    assert summary.get_attribute("data-passed") in ("true", "false")
    # The relay itself answers: its own IMAP listener is among the checks.
    assert any(name.startswith("listen imaps") for name in shown), shown
    records = admin_call(relay, "GET", "/admin/dns")
    assert records["status"] == 200, records
    rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-record]")
    assert len(rows) == len(records["body"]["records"]), (len(rows), records)


def test_the_admin_web_ui_signs_in_bans_invites_and_switches_services(relay, browser, tmp_path):
    status = admin_call(relay, "GET", "/admin/status")
    assert status["status"] == 200, status
    try:
        sign_in(browser, relay)
        ban_an_account(browser, relay)
        create_an_invite_and_read_its_qr(browser, relay, tmp_path)
        switch_a_service(browser, relay)
        read_the_doctor_report(browser, relay)
        photograph_every_screen(browser, tmp_path)
    finally:
        admin_call(relay, "POST", "/admin/services/shadowsocks", {"action": "enable"})
