//! `ktrack report` and `ktrack ui`: the page is self-contained, holds `compare`'s numbers and
//! every hash of a run's lineage, and the server answers on loopback and refuses writes. The
//! `#[ignore]`d tests open both in headless Chromium (`.ci/run` installs Debian's `chromium`):
//! no console error, no network request, and a screenshot of each page.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::common::TestContext;

const GRID: &str = r#"[grid]
inits = ["imagenet", "random", "img"]
tasks = ["progression_4y"]
protocols = ["linear"]
fractions = [0.5, 1.0]
seeds = [0]"#;

/// (table title, row, column) → (estimate, lo, hi, diff, p), from `compare --format json`.
type Cells = BTreeMap<(String, String, String), [Option<f64>; 5]>;

fn compare_cells(json: &str) -> Cells {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut out = Cells::new();
    for t in v.as_array().unwrap() {
        let title = t["fixed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| format!("{} {}", kv[0].as_str().unwrap(), kv[1].as_str().unwrap()))
            .collect::<Vec<_>>()
            .join(", ");
        for c in t["cells"].as_array().unwrap() {
            let cell = &c[2];
            out.insert(
                (
                    title.clone(),
                    c[0].as_str().unwrap().into(),
                    c[1].as_str().unwrap().into(),
                ),
                ["estimate", "lo", "hi", "diff", "p"].map(|k| cell[k].as_f64()),
            );
        }
    }
    out
}

/// The same from the report's headline tables (their `data-*` attributes).
fn report_cells(html: &str) -> Cells {
    let div = regex::Regex::new(r#"(?s)<div class="table" data-metric="[^"]*" data-headline="true"><h3>([^<]*?) — .*?</h3>(.*?)</table>"#).unwrap();
    let th = regex::Regex::new(r"<th[^>]*>([^<]*)</th>").unwrap();
    let row = regex::Regex::new(r"(?s)<tr><th>([^<]*)</th>(.*?)</tr>").unwrap();
    let td = regex::Regex::new(r#"<td(?: data-sort="[^"]*" data-estimate="([^"]*)" data-lo="([^"]*)" data-hi="([^"]*)" data-diff="([^"]*)" data-p="([^"]*)")?[^>]*>"#).unwrap();
    let mut out = Cells::new();
    for d in div.captures_iter(html) {
        let body = &d[2];
        let head = &body[..body.find("</thead>").unwrap()];
        let cols: Vec<String> = th
            .captures_iter(head)
            .skip(1)
            .map(|c| c[1].to_string())
            .collect();
        for r in row.captures_iter(&body[body.find("<tbody>").unwrap()..]) {
            for (i, c) in td.captures_iter(&r[2]).enumerate() {
                if c.get(1).is_none() {
                    continue;
                }
                let num = |k: usize| c.get(k).and_then(|m| m.as_str().parse::<f64>().ok());
                out.insert(
                    (
                        d[1].replace("&#39;", "'"),
                        r[1].to_string(),
                        cols[i].clone(),
                    ),
                    [num(1), num(2), num(3), num(4), num(5)],
                );
            }
        }
    }
    out
}

/// A finished sweep with a skipped init; returns the id of a finished downstream run.
fn sweep(ctx: &TestContext) -> String {
    let spec = ctx.mini_study(GRID, "");
    ctx.ok(["run", spec.to_str().unwrap(), "--no-compare"]);
    let status: serde_json::Value =
        serde_json::from_str(&ctx.ok(["status", "--format", "json"])).unwrap();
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "downstream" && r["status"] == "done")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn check_page(ctx: &TestContext, html: &str, run: &str) {
    // Self-contained: the only URLs are XML namespaces; every figure is inline SVG.
    let url = regex::Regex::new(r#"https?://[^"'\s)<]*"#).unwrap();
    for m in url.find_iter(html) {
        assert_eq!(
            m.as_str(),
            "http://www.w3.org/2000/svg",
            "a URL in the page"
        );
    }
    assert!(!html.contains(" src=") && !html.contains("@import"));
    assert!(
        html.contains("default-src 'none'"),
        "the page forbids itself requests"
    );
    assert!(html.contains("@font-face{font-family:'DejaVu Sans';src:url(data:font/ttf;base64,"));
    // The skipped init, with its reason.
    assert!(
        html.contains("Skipped: init <b>imagenet</b> (2 runs): no torchvision weights file"),
        "skipped init missing"
    );
    // The tables hold compare's numbers.
    let json = ctx.ok(["compare", "--format", "json", "--bootstrap", "200"]);
    let (want, got) = (compare_cells(&json), report_cells(html));
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // The lineage of a run shows its hashes: the run, its record and every lineage edge.
    let show: serde_json::Value =
        serde_json::from_str(&ctx.ok(["show", run, "--format", "json"])).unwrap();
    let section = &html[html
        .find(&format!(r#"<details class="run" id="run-{run}">"#))
        .unwrap()..];
    let section = &section[..section.find("</details>").unwrap()];
    let mut hashes = vec![
        show["run"]["id"].as_str().unwrap().to_string(),
        show["run"]["record"].as_str().unwrap().to_string(),
        show["cohort"]["hash"].as_str().unwrap().to_string(),
        show["split"]["hash"].as_str().unwrap().to_string(),
        show["fraction"]["hash"].as_str().unwrap().to_string(),
        show["pretrain"]["run"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ];
    hashes.extend(
        show["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o[1].as_str().unwrap().to_string()),
    );
    for h in hashes.iter().filter(|h| !h.is_empty()) {
        assert!(
            section.contains(&format!(r#"<code class="hash">{h}</code>"#)),
            "hash {h} missing"
        );
    }
    assert!(section.contains("<svg") && section.contains(r#"class="lineage""#));
    assert!(section.contains(">Training loss<") && section.contains("best epoch"));
    assert!(section.contains("<th>rustc</th>"));
}

#[test]
fn report_is_one_self_contained_file_with_compares_numbers_and_the_lineage() {
    let ctx = TestContext::new();
    let run = sweep(&ctx);
    let out = ctx.run(["report", "--bootstrap", "200", "-o", "report.html"]);
    assert!(
        out.starts_with("exit_code: 0") && out.contains("Reported"),
        "{out}"
    );
    let html = std::fs::read_to_string(ctx.root().join("report.html")).unwrap();
    check_page(&ctx, &html, &run);
    // ROC and PR figures of the binary cells, with whole legends.
    assert!(html.contains(">ROC: progression_4y, linear, 100% labels, test<"));
    assert!(html.contains(">PR: progression_4y, linear, 100% labels, test<"));
    assert!(html.contains("seed 0 (AUROC 0.") && html.contains("seed 0 (AP 0."));
    // Points carry their run id for the hover.
    assert!(html.contains(r#"<circle class="point""#) && html.contains(" data-run=\""));
    // An unknown sweep is one clear error, and nothing is written.
    let bad = ctx.run(["report", "--sweep", "nope", "-o", "nope.html"]);
    assert!(
        bad.starts_with("exit_code: 1") && bad.contains("sweep `nope` is not in the index"),
        "{bad}"
    );
    assert!(!ctx.root().join("nope.html").exists());
}

/// `ktrack ui --port 0`: the child and the address it printed.
fn serve(ctx: &TestContext) -> (Child, String) {
    let mut child = ctx
        .spawnable(["ui", "--port", "0", "--bootstrap", "200"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("ui printed its address").unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    (code, text)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ui_serves_the_report_on_loopback_and_refuses_writes() {
    let ctx = TestContext::new();
    let run = sweep(&ctx);
    let (child, addr) = serve(&ctx);
    let _guard = Killed(child);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let (code, page) = http(&addr, "GET", "/");
    assert_eq!(code, 200, "{page}");
    let body = &page[page.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.contains(r#"data-live="true""#) && body.contains("connect-src 'self'"));
    check_page(&ctx, body, &run);
    let (code, status) = http(&addr, "GET", "/api/status");
    assert_eq!(code, 200);
    let json: serde_json::Value =
        serde_json::from_str(&status[status.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(json["counts"]["done"], 5, "{json}");
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/api/status"] {
            assert_eq!(http(&addr, method, path).0, 405, "{method} {path}");
        }
    }
    assert_eq!(http(&addr, "GET", "/../ktrack.db").0, 404);
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is installed (apt-get install chromium)")
}

/// Hosts Chromium itself calls whatever the page (clock, component updates, accounts).
const CHROMIUM_OWN: [&str; 4] = [
    "clients2.google.com",
    "update.googleapis.com",
    "accounts.google.com",
    "optimizationguide-pa.googleapis.com",
];

/// Headless Chromium on `url`: the DOM after its script ran, its console lines, and the
/// requests it made that were not Chromium's own: every http(s) request goes through a proxy
/// on loopback, which notes each one's first line.
fn browse(url: &str, shot: Option<&Path>, budget_ms: u32) -> (String, Vec<String>, Vec<String>) {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    proxy.set_nonblocking(true).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,1800",
        &format!("--virtual-time-budget={budget_ms}"),
        &format!("--proxy-server=http://127.0.0.1:{port}"),
        &format!("--user-data-dir={}", profile.path().display()),
    ]);
    match shot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    let mut requests = Vec::new();
    while let Ok((mut conn, _)) = proxy.accept() {
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).unwrap_or(0);
        let line = String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let target = line.split(' ').nth(1).unwrap_or("");
        let host = target
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .split(['/', ':'])
            .next()
            .unwrap_or("");
        if !CHROMIUM_OWN.contains(&host) {
            requests.push(line);
        }
    }
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Refused to"))
        .map(String::from)
        .collect();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
        requests,
    )
}

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "needs Chromium; run by name in .ci/run"]
fn report_in_chromium_has_no_console_error_no_request_and_compares_numbers() {
    let ctx = TestContext::new();
    let run = sweep(&ctx);
    ctx.ok(["report", "--bootstrap", "200", "-o", "report.html"]);
    let file = format!("file://{}", ctx.root().join("report.html").display());
    let (dom, console, requests) = browse(&file, None, 3000);
    assert!(
        dom.contains(r#"data-ready="true""#),
        "the script ran: {}",
        &dom[..dom.len().min(400)]
    );
    assert!(!dom.contains("data-errors="), "script errors");
    assert_eq!(console, Vec::<String>::new(), "console messages");
    assert_eq!(requests, Vec::<String>::new(), "network requests");
    // After the script: the numbers are compare's, and the run's hashes are shown.
    check_page(&ctx, &dom, &run);
    let dir = artefacts();
    for page in [
        "status",
        "compare",
        "figures",
        "runs",
        &format!("run-{}", &run[..12]),
    ] {
        let shot = dir.join(format!("report-{}.png", page.replace('/', "_")));
        let (_, console, requests) = browse(&format!("{file}#{page}"), Some(&shot), 2000);
        assert!(
            console.is_empty() && requests.is_empty(),
            "{page}: {console:?} {requests:?}"
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "{page} screenshot"
        );
    }
    eprintln!("screenshots in {}", dir.display());
}

#[test]
#[ignore = "needs Chromium; run by name in .ci/run"]
fn ui_in_chromium_has_no_console_error_and_polls_the_status() {
    let ctx = TestContext::new();
    let _run = sweep(&ctx);
    let (child, addr) = serve(&ctx);
    let _guard = Killed(child);
    // Long enough for one status poll (every 5 s).
    let (dom, console, requests) = browse(&format!("http://{addr}/#status"), None, 7000);
    assert!(dom.contains(r#"data-ready="true""#) && !dom.contains("data-errors="));
    assert_eq!(console, Vec::<String>::new());
    assert_eq!(requests, Vec::<String>::new(), "requests beyond the server");
    assert!(dom.contains("5 runs: 5 done"));
    let shot = artefacts().join("ui-status.png");
    browse(&format!("http://{addr}/#status"), Some(&shot), 2000);
    assert!(shot.exists());
}
