#!/usr/bin/env python3
"""The chat page of `chorus serve` (GET /) in a real browser: headless Chromium (the Debian
package, driven through its chromedriver by Selenium from PyPI, installed into the shared test
venv on first use).

usage: browser_test.py CHORUS_BINARY MODEL.gguf VENV_DIR SCREENSHOT.png

Starts `chorus serve --api-key` on a free loopback port, opens the page, waits for the header to
report the missing key, types the key (the header must then name the model), a system prompt,
temperature 0 and a max-token count, sends a message with the Send button, waits until the page
has finished the reply (the tokens/s line appears after the stream ends and Send is enabled
again), reads the reply bubble from the DOM and saves a screenshot. The reply must equal the
greedy reply of POST /v1/chat/completions for the same conversation and max_tokens. Exits
non-zero with a message on the first failure; a missing chromium or chromedriver is a failure.
"""
import json
import os
import sys
import time
import urllib.request

from client_tests import check, ensure_venv, fail, serve

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HANG_GUARD = 300  # seconds; never a measure of speed: each wait ends as soon as the page is ready

KEY = "sk-chorus-browser"
SYSTEM = "You tell stories."
MESSAGE = "A cat and a dog"
MAX_TOKENS = 24


def request(port, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path),
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=HANG_GUARD) as r:
        return r.status, r.read().decode()


def wait_healthy(port):
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            if request(port, "/health")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            fail("/health did not answer 200 within %d s" % HANG_GUARD)
        time.sleep(0.1)


def require_browser():
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            fail("%s is missing: the Debian package %s provides it (scripts/install-deps.sh installs it)" % (path, package))


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,700", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception as e:  # noqa: BLE001 - any failure to start the browser ends the test with its reason
        fail("headless Chromium did not start: %s" % e)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    chorus, model, venv, screenshot = sys.argv[1:5]
    if not os.path.exists(model):
        fail("model %s is missing (../shared/models holds stories260K.gguf)" % model)
    require_browser()
    os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
    ensure_venv(venv, {"selenium": "selenium"})
    import selenium
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with serve(chorus, model, "-np", "1", "-c", "2048", "--api-key", KEY, "--alias", "tiny") as port:
        wait_healthy(port)
        model_id = json.loads(request(port, "/v1/models")[1])["data"][0]["id"]
        check(model_id == "tiny", "/v1/models names the model %r, not its alias" % model_id)
        driver = browser()
        try:
            def wait_for(what, condition):
                try:
                    return WebDriverWait(driver, HANG_GUARD, poll_frequency=0.1).until(lambda d: condition())
                except TimeoutException:
                    driver.save_screenshot(screenshot)
                    fail("the page did not show %s within %d s (screenshot %s); header %r, log %r" % (
                        what, HANG_GUARD, screenshot, text("model"), text("log")))

            def element(id):
                return driver.find_element(By.ID, id)

            def text(id):
                return element(id).get_property("textContent")

            def type_into(id, value):
                field = element(id)
                field.clear()
                field.send_keys(value)
                check(field.get_property("value") == value, "field %s holds %r, not %r" % (id, field.get_property("value"), value))

            driver.get("http://127.0.0.1:%d/" % port)
            check(driver.title == "chorus", "page title %r" % driver.title)
            # Without the key /v1/models answers 401: the header says so. Only then type the key, so
            # that the first request cannot finish after the second and overwrite its header.
            wait_for("the model as unavailable", lambda: "unavailable" in text("model"))
            type_into("key", KEY)
            element("key").send_keys(Keys.TAB)  # the field's change event asks /v1/models again
            wait_for("the model name", lambda: text("model").startswith("chorus: " + model_id + " on "))
            header = text("model")

            type_into("system", SYSTEM)
            type_into("temperature", "0")
            type_into("max_tokens", str(MAX_TOKENS))
            type_into("input", MESSAGE)
            element("send").click()
            # Send is disabled from the click until the stream ends; the tokens/s line is written
            # after that, last of all.
            wait_for("a finished reply", lambda: "tokens/s" in text("stats") and element("send").is_enabled())
            bubbles = driver.find_elements(By.CSS_SELECTOR, "#log .msg")
            check([b.get_attribute("class") for b in bubbles] == ["msg user", "msg assistant"],
                  "bubbles %r" % [(b.get_attribute("class"), b.get_property("textContent")) for b in bubbles])
            check(bubbles[0].get_property("textContent") == MESSAGE, "user bubble %r" % bubbles[0].get_property("textContent"))
            page_reply = bubbles[1].get_property("textContent")
            rendered = bubbles[1].text  # what is visible, as the browser lays it out
            stats = text("stats")
            check(driver.save_screenshot(screenshot), "screenshot %s not saved" % screenshot)
            version = driver.capabilities.get("browserVersion", "?")
        finally:
            driver.quit()

        _, body = request(port, "/v1/chat/completions", {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": MESSAGE}],
            "temperature": 0, "max_tokens": MAX_TOKENS})
        api_reply = json.loads(body)["choices"][0]["message"]["content"]
        check(api_reply, "the API's reply is empty: %s" % body)
        check(page_reply == api_reply, "the page's reply %r differs from the API's greedy reply %r" % (page_reply, api_reply))
        check(" ".join(rendered.split()) == " ".join(api_reply.split()),
              "the rendered reply %r differs from the API's %r" % (rendered, api_reply))

    print("header: %s" % header)
    print("reply: %r" % page_reply)
    print("stats: %s" % stats)
    print("Chromium %s, selenium %s: the page's reply equals the API's greedy reply; screenshot %s: OK" % (
        version, selenium.__version__, screenshot))


if __name__ == "__main__":
    main()
