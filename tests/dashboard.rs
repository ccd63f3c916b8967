//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver by fantoccini, against a real `callplane serve`
//! whose calls go to a sipp UAS that echoes their RTP.
//!
//! One test walks what an operator does (docs/dashboard.md): sign in, create a campaign
//! through the form, upload a CSV and read the validation report, preview, start it and
//! watch it complete without reloading, open a call, play its recording, see both waveforms
//! and the SIP ladder. Then a viewer key, which cannot start a campaign, and the pages on a
//! 390 px phone screen. A contact named `<img src=x onerror=alert(1)>` must render as text.
//! Screenshots of each page go to `target/dashboard-screenshots/` (named in the log).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use common::ServeClient;
use common::campaign::{Behaviour, Callee, Serve};

/// Upper bound for one page to show what the test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(20);
/// Upper bound for the campaign to complete (6 contacts, 2.5 s calls, 5 at once).
const CAMPAIGN_WAIT: Duration = Duration::from_secs(120);

/// The contact name that must stay text.
const XSS_NAME: &str = "<img src=x onerror=alert(1)>";

fn chromium_available() -> bool {
    common::tool_available("chromedriver", "--version", "chromium-driver")
        && common::tool_available("chromium", "--version", "chromium")
}

/// Where screenshots go: `target/dashboard-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A running chromedriver on a free port (killed on drop).
struct Driver {
    _child: Child,
    url: String,
}

impl Driver {
    async fn start(log: &Path) -> Driver {
        let port = common::free_tcp_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let ready = http
                .get(format!("{url}/status"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver answered /status in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { _child: child, url }
    }

    /// A headless Chromium session: a 1280 × 900 desktop window, or a 390 × 844 phone screen
    /// (Chromium's mobile emulation: viewport, touch and device pixel ratio).
    async fn session(&self, profile: &Path, phone: bool) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-extensions".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut options = json!({"binary": chromium_binary(), "args": []});
        if phone {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0}});
        } else {
            args.push("--window-size=1280,900".to_owned());
        }
        options["args"] = json!(args);
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Driver {
    /// A new session on the dashboard at `base`, its screenshots named by its width.
    async fn page(&self, profile: &Path, phone: bool, base: &str) -> Page {
        Page {
            c: self.session(profile, phone).await,
            driver: self.url.clone(),
            base: base.to_owned(),
            shots: screenshot_dir(),
            width: if phone { 390 } else { 1280 },
        }
    }
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chromium")
}

/// The campaign callee (`campaign_uas.xml`: answers, or busy / rings by number) echoing the
/// RTP it gets, so both channels of a recording carry audio.
async fn echoing_callee(dir: &Path) -> Callee {
    let media_port = common::free_udp_port().to_string();
    Callee::start_with(dir, &["-mp".into(), media_port, "-rtp_echo".into()]).await
}

/// The page under test in one browser session, with its screenshots.
struct Page {
    c: Client,
    /// chromedriver's URL (its log and CDP endpoints).
    driver: String,
    base: String,
    shots: PathBuf,
    width: u32,
}

impl Page {
    async fn goto(&self, hash: &str) {
        self.c
            .goto(&format!("{}/{hash}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {hash}: {e}"));
    }

    /// Waits for an element (bounded).
    async fn find(&self, css: &str) -> Element {
        self.c
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} on the page within {PAGE_WAIT:?}: {e}"))
    }

    /// Runs a script (its `return` value).
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// Waits until the script returns true (bounded by `limit`).
    async fn until(&self, what: &str, limit: Duration, script: &str, args: Vec<Value>) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.js(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {limit:?}; the page says:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of an element (waits for it).
    async fn text_of(&self, css: &str) -> String {
        self.find(css).await;
        self.js(
            "return document.querySelector(arguments[0]).textContent.trim();",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn text(&self) -> String {
        self.js("return document.body.innerText;", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Clicks an element; a live page may redraw it between finding and clicking (a stale
    /// element), so it is found again until the click lands (bounded).
    async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "click {css} within {PAGE_WAIT:?}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A screenshot of the whole page (Chromium's `Page.captureScreenshot` beyond the viewport,
    /// through chromedriver's CDP endpoint), or of the viewport if that is refused.
    async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        // Let charts and bars finish their transitions.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let session = self
            .c
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let full: Option<Vec<u8>> = async {
            let answer: Value = reqwest::Client::new()
                .post(format!(
                    "{}/session/{session}/goog/cdp/execute",
                    self.driver
                ))
                .json(&json!({"cmd": "Page.captureScreenshot",
                    "params": {"format": "png", "captureBeyondViewport": true}}))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let data = answer["value"]["data"].as_str()?;
            base64::engine::general_purpose::STANDARD.decode(data).ok()
        }
        .await;
        let png = match full {
            Some(png) => png,
            None => self.c.screenshot().await.expect("screenshot"),
        };
        let path = self.shots.join(format!("{name}-{}.png", self.width));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// The page is no wider than the screen (nothing to scroll sideways but inside tables).
    async fn fits_the_screen(&self, page: &str) {
        let widths = self
            .js(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await;
        let (scroll, inner) = (
            widths[0].as_i64().unwrap_or(0),
            widths[1].as_i64().unwrap_or(0),
        );
        assert!(
            scroll <= inner + 1,
            "{page} at {} px: the page is {scroll} px wide in a {inner} px window",
            self.width
        );
    }

    /// The browser's console since the last call: fails on script errors and CSP violations.
    /// (Refused requests show as "Failed to load resource": a page asks the API only for what
    /// the key may read, so any such line is reported too.)
    async fn console_is_clean(&self, phase: &str) {
        let driver = &self.driver;
        let session = self
            .c
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let logs: Value = reqwest::Client::new()
            .post(format!("{driver}/session/{session}/se/log"))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("browser log")
            .json()
            .await
            .expect("browser log JSON");
        assert!(
            logs["value"].is_array(),
            "{phase}: chromedriver's browser log: {logs}"
        );
        let bad: Vec<String> = logs["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["level"] == "SEVERE")
            .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(bad.is_empty(), "{phase}: the console has errors: {bad:#?}");
    }

    async fn sign_in(&self, key: &str, role: &str) {
        self.goto("#/campaigns").await;
        let input = self.find("#signin input#key").await;
        input.send_keys(key).await.expect("type the key");
        self.click("#signin-submit").await;
        self.until(
            "the header names the key's role",
            PAGE_WAIT,
            "const w = document.getElementById('who'); return !!w && !w.hidden && w.textContent.includes(arguments[0]);",
            vec![json!(role)],
        )
        .await;
    }
}

/// A CSV of `answer` answering contacts (one named [`XSS_NAME`]), one busy contact and one row
/// that is not a phone number.
fn contacts_csv() -> String {
    let mut csv = String::from("phone,name,first_name\n");
    for n in 0..4 {
        let name = if n == 1 {
            XSS_NAME.to_owned()
        } else {
            format!("Answer {n}")
        };
        // RFC 4180: a field with a quote or comma is quoted; this one has neither.
        csv.push_str(&format!("{},{name},Ada\n", Behaviour::Answer.number(n)));
    }
    csv.push_str(&format!("{},Busy One,Bob\n", Behaviour::Busy.number(0)));
    csv.push_str("=cmd|' /C calc'!A0,Formula,Eve\n");
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_campaign_and_plays_a_call_in_the_browser() {
    if !common::sipp_available() || !chromium_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let callee = echoing_callee(dir.path()).await;
    let serve = Serve::start(dir.path(), &data, None, &[], &dir.path().join("serve.log")).await;
    let owner_key = serve
        .bootstrap_key
        .clone()
        .expect("a new database prints its key");
    let api = ServeClient::new(serve.base.clone(), owner_key.clone());
    let me = api.get("/v1/me").await;
    let tenant = me["tenant_id"].as_str().expect("tenant").to_owned();

    // What the form picks from: a trunk to the callee and a script playing a 2 s prompt.
    let prompts = data.join("prompts").join(&tenant);
    std::fs::create_dir_all(&prompts).expect("prompt dir");
    let tone: Vec<i16> = (0..16_000)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    callplane::files::generated::write_wav_mono(&prompts.join("hello.wav"), 8000, &tone)
        .expect("prompt");
    let trunk = common::campaign::create(
        &api,
        "/v1/trunks",
        &json!({"name": "sipp callee", "address": callee.address()}),
    )
    .await;
    let script = common::campaign::create(
        &api,
        "/v1/scripts",
        &json!({"name": "hello", "body": {"version": 1, "steps": [
            {"play": {"file": "hello", "barge_in": false}},
            {"pause": {"ms": 500}},
            {"hangup": {"reason": "done"}}
        ]}}),
    )
    .await;
    let (status, viewer) = api
        .send(
            reqwest::Method::POST,
            "/v1/keys",
            Some(&json!({"name": "wallboard", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{viewer}");
    let viewer_key = viewer["secret"].as_str().expect("secret").to_owned();

    let driver = Driver::start(&dir.path().join("chromedriver.log")).await;
    let page = driver
        .page(&dir.path().join("profile-desktop"), false, &serve.base)
        .await;

    // Sign in; the key stays in this tab's session storage only.
    page.goto("#/campaigns").await;
    page.find("#signin").await;
    page.screenshot("01-sign-in").await;
    page.sign_in(&owner_key, "owner").await;
    let stored = page
        .js(
            "return [sessionStorage.getItem('callplane.key'), localStorage.length];",
            vec![],
        )
        .await;
    assert_eq!(
        stored,
        json!([owner_key, 0]),
        "the key is in session storage only"
    );

    // Create a campaign through the form: every day open all day in the callee's zone, so
    // the test does not depend on the hour it runs; busy retried once after a second.
    page.goto("#/campaigns/new").await;
    let form = page.find("form#campaign-form").await;
    form.find(Locator::Css("input[name=name]"))
        .await
        .expect("name field")
        .send_keys("browser survey")
        .await
        .expect("type the name");
    page.js(
        "const f = document.getElementById('campaign-form');\
         const pick = f.querySelector('select[name=script_id]');\
         pick.value = arguments[0]; pick.dispatchEvent(new Event('change', {bubbles: true}));\
         const t = f.querySelector('input[name=trunk_ids][value=\"' + arguments[1] + '\"]');\
         if (!t.checked) t.click();\
         for (const [n, v] of [['max_concurrent', '5'], ['max_cps', '10'], ['ring_timeout_s', '5'], ['default_timezone', 'Europe/Paris'], ['retry-busy-max_retries', '1'], ['retry-busy-after_s', '1'], ['retry-jitter', '0']]) {\
           const i = f.querySelector('[name=' + n + ']'); i.value = v;\
           i.dispatchEvent(new Event('input', {bubbles: true})); i.dispatchEvent(new Event('change', {bubbles: true}));\
         }\
         const rec = f.querySelector('input[name=record]'); if (!rec.checked) rec.click();\
         document.getElementById('windows-always').click();\
         return true;",
        vec![json!(script), json!(trunk)],
    )
    .await;
    page.screenshot("02-campaign-form").await;
    page.click("button#create-campaign").await;
    page.until(
        "the new campaign's page opens",
        PAGE_WAIT,
        "return /^#\\/campaigns\\/cmp_[0-9a-f]+$/.test(location.hash);",
        vec![],
    )
    .await;
    let hash = page.js("return location.hash;", vec![]).await;
    let campaign = hash
        .as_str()
        .and_then(|h| h.strip_prefix("#/campaigns/"))
        .expect("campaign id in the hash")
        .to_owned();
    let stored = api.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(stored["status"], "draft", "{stored}");
    assert_eq!(stored["settings"]["trunk_ids"], json!([trunk]), "{stored}");
    assert_eq!(stored["settings"]["max_concurrent"], 5, "{stored}");
    assert_eq!(stored["settings"]["record"], true, "{stored}");
    assert_eq!(page.text_of("#campaign-status").await, "draft");

    // Upload the CSV and read the per-row report.
    let csv_path = dir.path().join("contacts.csv");
    std::fs::write(&csv_path, contacts_csv()).expect("write CSV");
    page.find("input#csv-file")
        .await
        .send_keys(csv_path.to_str().expect("UTF-8 path"))
        .await
        .expect("choose the CSV");
    page.click("button#upload-csv").await;
    page.find("#upload-report [data-count=accepted]").await;
    let count = |name: &'static str| {
        let page = &page;
        async move {
            page.text_of(&format!("#upload-report [data-count={name}]"))
                .await
                .replace(',', "")
        }
    };
    assert_eq!(count("rows").await, "6");
    assert_eq!(count("accepted").await, "5");
    assert_eq!(count("rejected").await, "1");
    let entries = page.text_of("#upload-entries tr[data-line=\"7\"]").await;
    assert!(
        entries.contains("rejected") && entries.contains("invalid_number"),
        "the report names the bad row (line 7) and why: {entries}"
    );
    let bar = page
        .js(
            "return document.querySelector('#upload-progress').getAttribute('aria-valuenow');",
            vec![],
        )
        .await;
    assert_eq!(bar, json!("100"), "the upload bar reached its end");
    page.screenshot("03-csv-report").await;

    // The dry run before starting.
    page.click("button#preview").await;
    page.until(
        "the preview says how many would be dialled",
        PAGE_WAIT,
        "const p = document.querySelector('#preview-result [data-preview=would_dial]'); return !!p && p.textContent.trim() === '5';",
        vec![],
    )
    .await;
    page.screenshot("04-preview").await;

    // Start it and watch it complete on the page, with no reload and no polling: the marker
    // set on this document must survive, and the counters must move by the event stream.
    page.js("window.__sameDocument = 'yes'; return true;", vec![])
        .await;
    page.click("button#start").await;
    page.until(
        "the campaign completes on screen",
        CAMPAIGN_WAIT,
        "const s = document.getElementById('campaign-status'); return !!s && s.textContent.trim() === 'completed';",
        vec![],
    )
    .await;
    assert_eq!(
        page.js("return window.__sameDocument;", vec![]).await,
        json!("yes"),
        "the page was not reloaded"
    );
    let progress = api.get(&format!("/v1/campaigns/{campaign}")).await["progress"].clone();
    // Counters equal the API's once the stream has delivered the last events.
    for (status, n) in progress["contacts"]
        .as_object()
        .expect("contacts by status")
    {
        let want = n.as_i64().expect("count").to_string();
        page.until(
            &format!("counter {status} shows {want}"),
            PAGE_WAIT,
            "const e = document.querySelector('[data-counter=\"' + arguments[0] + '\"]'); return !!e && e.textContent.replace(/[^0-9]/g, '') === arguments[1];",
            vec![json!(status), json!(want)],
        )
        .await;
    }
    // The busy contact was retried once (the form's retry rule), then exhausted.
    assert_eq!(progress["contacts"]["completed"], 4, "{progress}");
    assert_eq!(progress["contacts"]["exhausted"], 1, "{progress}");
    assert_eq!(progress["outcomes"]["busy"], 2, "{progress}");
    // The results: the worker's own call variables (phone, name, contact id...) are columns,
    // not answers, so the export names each column once (the script gathers nothing).
    let results = api.get(&format!("/v1/campaigns/{campaign}/results")).await;
    for row in results["items"].as_array().expect("items") {
        assert_eq!(row["answers"], json!({}), "{row}");
    }
    let csv = reqwest::Client::new()
        .get(format!("{}/v1/campaigns/{campaign}/results", serve.base))
        .bearer_auth(&owner_key)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("results CSV")
        .text()
        .await
        .expect("CSV text");
    let header: Vec<&str> = csv.lines().next().expect("a header").split(',').collect();
    let unique: std::collections::BTreeSet<&str> = header.iter().copied().collect();
    assert_eq!(unique.len(), header.len(), "each column once: {header:?}");
    assert_eq!(progress["contacts"]["suppressed"], 0, "{progress}");
    page.until(
        "the progress bar is full",
        PAGE_WAIT,
        "return document.querySelector('#campaign-progress').getAttribute('aria-valuenow') === '100';",
        vec![],
    )
    .await;
    // Quiet now: once the last events' throttled re-reads (at most 2 s later) are done,
    // nothing re-reads the campaign without an event (no polling loop).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reads = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/v1/campaigns/' + arguments[0])).length;";
    let before = page.js(reads, vec![json!(campaign)]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = page.js(reads, vec![json!(campaign)]).await;
    assert_eq!(
        before, after,
        "the page reads the campaign only when an event says so"
    );
    let used_stream = page
        .js(
            "return performance.getEntriesByType('resource').some(e => e.name.includes('/v1/events'));",
            vec![],
        )
        .await;
    assert_eq!(
        used_stream,
        json!(true),
        "the page follows the event stream"
    );

    // The hostile name is text: no <img> was made of it and no alert opened.
    page.until(
        "the contacts table lists the hostile name",
        PAGE_WAIT,
        "return document.getElementById('contacts').textContent.includes(arguments[0]);",
        vec![json!(XSS_NAME)],
    )
    .await;
    assert_eq!(
        page.js("return document.querySelectorAll('img').length;", vec![])
            .await,
        json!(0),
        "no element was made from the contact's name"
    );
    assert!(
        page.c.get_alert_text().await.is_err(),
        "no alert dialog is open"
    );
    page.screenshot("05-campaign-completed").await;
    page.console_is_clean("campaign").await;

    // The campaign list, completed tab.
    page.goto("#/campaigns").await;
    page.click("button[data-tab=completed]").await;
    page.find(&format!("tr[data-campaign={campaign}]")).await;
    page.screenshot("06-campaign-list").await;

    // Its calls, then one answered call: the ladder, both waveforms, the player.
    page.goto(&format!("#/calls?campaign_id={campaign}")).await;
    page.find("tr[data-call]").await;
    page.screenshot("07-calls").await;
    let calls = api
        .get(&format!(
            "/v1/calls?campaign_id={campaign}&outcome=answered&limit=1"
        ))
        .await;
    let call = calls["items"][0]["id"]
        .as_str()
        .expect("an answered call")
        .to_owned();
    page.click(&format!("tr[data-call={call}] a[href=\"#/calls/{call}\"]"))
        .await;
    assert_eq!(page.text_of("#call-status").await, "completed");
    for (label, dir) in [("INVITE", "out"), ("200 OK", "in"), ("ACK", "out")] {
        page.find(&format!(
            "svg#ladder g.ladder-msg[data-label=\"{label}\"][data-dir={dir}]"
        ))
        .await;
    }
    page.find("#timeline .span-answered").await;
    // Both channels carry audio (the prompt, and the callee echoing it): each waveform's
    // envelope spans over a tenth of its height (the tone peaks at a quarter of full scale;
    // silence draws a 0.6 px line).
    for channel in ["0", "1"] {
        page.until(
            &format!("waveform of channel {channel} is drawn with audio"),
            PAGE_WAIT,
            "const svg = document.querySelector('svg.wave[data-channel=\"' + arguments[0] + '\"]'); const p = svg && svg.querySelector('path');\
             if (!p || (p.getAttribute('d') || '').length < 100) return false;\
             return p.getBBox().height > 0.1 * svg.viewBox.baseVal.height;",
            vec![json!(channel)],
        )
        .await;
    }
    page.find(".wave-marker").await;
    page.click("button#play").await;
    page.until(
        "the recording plays",
        PAGE_WAIT,
        "const a = document.getElementById('player-audio'); return !!a && a.currentTime > 0.3;",
        vec![],
    )
    .await;
    // A marker seeks the player to its time.
    let seek = page
        .js(
            "const m = document.querySelector('.wave-marker[data-t]'); const a = document.getElementById('player-audio');\
             a.pause(); m.dispatchEvent(new MouseEvent('click', {bubbles: true}));\
             return [Number(m.dataset.t), a.currentTime];",
            vec![],
        )
        .await;
    let (want, got) = (
        seek[0].as_f64().unwrap_or(-1.0),
        seek[1].as_f64().unwrap_or(-2.0),
    );
    assert!(
        (want - got).abs() < 0.05,
        "a marker at {want} s seeks to {got} s"
    );
    page.screenshot("08-call").await;
    page.console_is_clean("call page").await;

    // Operations.
    page.goto("#/ops").await;
    page.find(&format!("#trunks tr[data-trunk={trunk}]")).await;
    page.find("#keys tr[data-key]").await;
    page.screenshot("09-operations").await;
    page.console_is_clean("operations").await;
    page.c.clone().close().await.expect("close the session");

    // A viewer: sees the campaign, cannot start a draft one.
    let draft = common::campaign::create(
        &api,
        "/v1/campaigns",
        &json!({"name": "not yours to start", "trunk_ids": [trunk]}),
    )
    .await;
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/campaigns/{draft}/contacts"),
            Some(&json!([{"phone": Behaviour::Answer.number(9)}])),
        )
        .await;
    assert_eq!(status, 200);
    let viewer_page = driver
        .page(&dir.path().join("profile-viewer"), false, &serve.base)
        .await;
    viewer_page.sign_in(&viewer_key, "viewer").await;
    viewer_page.goto(&format!("#/campaigns/{draft}")).await;
    assert_eq!(viewer_page.text_of("#campaign-status").await, "draft");
    let start = viewer_page.find("button#start").await;
    assert!(
        !start.is_enabled().await.expect("enabled?"),
        "a viewer's start button is disabled"
    );
    viewer_page.console_is_clean("viewer").await;
    // Even forced, the click changes nothing: the API refuses the viewer, and the page says so.
    viewer_page
        .js(
            "const b = document.getElementById('start'); b.disabled = false; b.click(); return true;",
            vec![],
        )
        .await;
    viewer_page
        .until(
            "the page shows the API's refusal",
            PAGE_WAIT,
            "const e = document.getElementById('action-error'); return !!e && /forbidden|lacks/.test(e.textContent);",
            vec![],
        )
        .await;
    assert_eq!(
        api.get(&format!("/v1/campaigns/{draft}")).await["status"],
        "draft"
    );
    viewer_page.goto(&format!("#/campaigns/{campaign}")).await;
    viewer_page.find("#campaign-status").await;
    viewer_page.screenshot("10-viewer-campaign").await;
    viewer_page.c.clone().close().await.expect("close");

    // The owner on a 390 px phone: every page fits the screen.
    let phone = driver
        .page(&dir.path().join("profile-phone"), true, &serve.base)
        .await;
    phone.sign_in(&owner_key, "owner").await;
    let pages = [
        (
            "06-campaign-list",
            "#/campaigns".to_owned(),
            "tr[data-campaign]".to_owned(),
        ),
        (
            "05-campaign-completed",
            format!("#/campaigns/{campaign}"),
            "#contacts tr[data-contact]".to_owned(),
        ),
        (
            "02-campaign-form",
            "#/campaigns/new".to_owned(),
            "button#create-campaign".to_owned(),
        ),
        (
            "07-calls",
            format!("#/calls?campaign_id={campaign}"),
            "tr[data-call]".to_owned(),
        ),
        (
            "08-call",
            format!("#/calls/{call}"),
            "svg.wave[data-channel=\"1\"] path".to_owned(),
        ),
        (
            "09-operations",
            "#/ops".to_owned(),
            "#suppressions table".to_owned(),
        ),
    ];
    // Each page is measured once its last part has loaded.
    for (name, hash, ready) in &pages {
        phone.goto(hash).await;
        phone.find(ready).await;
        phone.fits_the_screen(name).await;
        phone.screenshot(name).await;
    }
    phone.console_is_clean("phone").await;
    phone.c.clone().close().await.expect("close");
}
