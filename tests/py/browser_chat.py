#!/usr/bin/env python3
"""The chat page of `phiq serve` in a real browser: Debian's chromium, headless,
driven by Selenium through Debian's chromedriver (scripts/setup-browser.sh installs
them). Types a message, waits for the answer, and prints one JSON object: the
texts the answer bubble showed as it streamed, the final texts, and the browser
console's errors.

    browser_chat.py URL MESSAGE
"""
import json
import shutil
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

# Every change of the last assistant bubble, as the page shows it.
RECORD = """
window.__seen = [];
new MutationObserver(() => {
  const a = document.querySelectorAll('.msg.assistant, .msg.error');
  if (a.length) window.__seen.push(a[a.length - 1].textContent);
}).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
"""


def texts(driver, selector):
    """The elements' textContent, as the observer records it: WebDriver's rendered
    text (`.text`) normalises whitespace and drops invisible characters, so a
    sampled answer could differ from its own last streamed state."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)",
        selector,
    )


def main():
    url, message = sys.argv[1], sys.argv[2]
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        raise SystemExit("chromium and chromedriver are needed: run scripts/setup-browser.sh")
    opts = Options()
    opts.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "status").text == "(ready)")
        driver.execute_script(RECORD)
        box = driver.find_element(By.ID, "input")
        box.send_keys(message)
        box.send_keys(Keys.ENTER)

        def done(d):
            answered = d.find_elements(By.CSS_SELECTOR, ".msg.assistant, .msg.error")
            return answered and d.find_element(By.ID, "send").is_enabled()

        WebDriverWait(driver, 120).until(done)
        out = {
            "user": texts(driver, ".msg.user"),
            "answer": texts(driver, ".msg.assistant"),
            "errors": texts(driver, ".msg.error"),
            "seen": driver.execute_script("return window.__seen"),
            "console": [
                e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")
            ],
        }
        print(json.dumps(out))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
