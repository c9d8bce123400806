//! Headless Chromium inside a host, driven over the DevTools protocol: for pages a person looks
//! at (the agent's status page). Debian's `chromium`, started with `--headless --no-sandbox
//! --disable-background-networking`; the test reads the page's text, waits for what it should
//! show, collects console errors and uncaught exceptions, and takes screenshots.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::WebSocket;

use crate::net::Host;
use crate::process::Proc;
use crate::require::require_tool;

/// The DevTools port inside the host (each host has its own loopback).
const DEVTOOLS_PORT: u16 = 9222;

/// One browser with one page, in one host. Killed when dropped.
pub struct Browser {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Console errors, uncaught exceptions and error log entries, as they came.
    errors: Vec<String>,
    _proc: Proc,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts Chromium in `host` and opens `url` in its page.
    #[track_caller]
    pub fn open(host: &Host, url: &str) -> Browser {
        require_tool("chromium", "chromium");
        let profile = tempfile::tempdir().expect("a profile directory");
        let log = profile.path().join("chromium.log");
        let mut cmd = host.cmd("chromium");
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            &format!("--remote-debugging-port={DEVTOOLS_PORT}"),
            &format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
            "about:blank",
        ]);
        let proc = Proc::spawn(cmd, "chromium", &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ws_url = loop {
            if let Some(url) = host.in_ns(page_socket) {
                break url;
            }
            assert!(
                Instant::now() < deadline,
                "chromium's DevTools did not answer within 30 s; its log:\n{}",
                proc.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let stream = host
            .in_ns(|| TcpStream::connect(("127.0.0.1", DEVTOOLS_PORT)))
            .expect("connecting to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools websocket");
        let mut browser = Browser {
            ws,
            next_id: 0,
            errors: Vec::new(),
            _proc: proc,
            _profile: profile,
        };
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        browser.call("Page.enable", json!({}));
        browser.call("Page.navigate", json!({ "url": url }));
        browser
    }

    /// Sends one command and returns its result, noting the events that come meanwhile.
    #[track_caller]
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(msg.into()).expect("sending to DevTools");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method} in 30 s");
            let Some(msg) = self.receive() else { continue };
            if msg["id"] == id {
                if let Some(e) = msg.get("error") {
                    panic!("{method}: {e}");
                }
                return msg["result"].clone();
            }
        }
    }

    /// The next message, if one comes within the read timeout; events are looked at here.
    fn receive(&mut self) -> Option<Value> {
        match self.ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let msg: Value = serde_json::from_str(&text).ok()?;
                self.note(&msg);
                Some(msg)
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("DevTools connection: {e}"),
        }
    }

    fn note(&mut self, msg: &Value) {
        let params = &msg["params"];
        match msg["method"].as_str() {
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.errors
                    .push(format!("console.error: {}", params["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", params["entry"]));
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    #[track_caller]
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// The page's visible text.
    pub fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until `cond` holds for the page's text; returns how long that took. Panics after
    /// `timeout` with the text the page had.
    #[track_caller]
    pub fn wait_for_text(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&str) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let text = self.text();
            if cond(&text) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "the page did not show {what} within {timeout:?}; it showed:\n{text}"
            );
            // Events (console errors) keep being collected while waiting.
            let _ = self.receive();
        }
    }

    /// Console errors, uncaught exceptions and error log entries so far.
    pub fn errors(&mut self) -> Vec<String> {
        while self.receive().is_some() {}
        self.errors.clone()
    }

    /// A PNG of the whole page, written to `path`.
    #[track_caller]
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

/// The page target's websocket URL from `/json/list`, once DevTools answers (runs in the host).
fn page_socket() -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", DEVTOOLS_PORT)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // DevTools' server refuses HTTP/1.0.
    let request = format!(
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{DEVTOOLS_PORT}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    // It keeps the connection open whatever the request says: read what its length says.
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    let body = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })?;
        if body.len() >= length {
            break body.to_owned();
        }
    };
    let targets: Value = serde_json::from_str(&body).ok()?;
    targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
        .as_str()
        .map(str::to_owned)
}
