//! The live status page in a real browser: Debian's `chromium`, headless,
//! driven over the DevTools protocol (chromiumoxide), loads the admin
//! listener's `/` once against a gateway discovering simulated Kylin nodes
//! from ZooKeeper. Without a reload, the page shows a stopped node gone
//! within 3 s and the leader change on its timeline. A screenshot is saved
//! in the test's temp dir (copied to `$KGW_SCREENSHOT_DIR` when set).
//! Chromium is installed by `scripts/setup.sh`; without it the test fails.

use std::path::Path;
use std::time::{Duration, Instant};

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use kylin_gateway_tests::support::cluster::{ThreeNodes, node_id};
use kylin_gateway_tests::support::gateway::TempDir;
use kylin_gateway_tests::support::http::client;

const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

/// Headless Chromium with its own profile dir. The browser process is
/// killed when this is dropped (chromiumoxide spawns it with
/// `kill_on_drop`), its helpers exit with it, and the handler task ends.
struct Chromium {
    browser: Browser,
    handler: tokio::task::JoinHandle<()>,
}

impl Chromium {
    async fn launch(profile: &Path) -> Chromium {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the status page's browser test needs Debian's \
             chromium (scripts/setup.sh installs it: apt-get install chromium)"
        );
        let config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile)
            .window_size(1200, 900)
            .viewport(None)
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .launch_timeout(Duration::from_secs(60))
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        Chromium { browser, handler }
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.handler.abort();
    }
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("value of {js}: {e}"))
}

/// Polls `js` (a boolean expression) in the page until it holds.
async fn page_until(page: &Page, what: &str, timeout: Duration, js: &str) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if eval::<bool>(page, js).await {
            return Instant::now();
        }
        if Instant::now() > deadline {
            let body: String = eval(page, "document.body.innerText").await;
            panic!("timed out after {timeout:?} waiting for {what}; the page shows:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_the_cluster_without_a_reload() {
    let dir = TempDir::new("kgw-browser");
    let ThreeNodes {
        mut first,
        second,
        mut query,
        gateway,
        server: _zookeeper,
    } = ThreeNodes::start(WAIT).await;
    let second_id = node_id(&client(), &gateway, &second.addr()).await;

    let chromium = Chromium::launch(&dir.path.join("profile")).await;
    let page = chromium
        .browser
        .new_page(gateway.admin_url("/"))
        .await
        .expect("open the status page");
    let rows = "document.querySelectorAll('#nodes tbody tr')";
    page_until(
        &page,
        "three nodes on the page",
        WAIT,
        &format!("{rows}.length === 3"),
    )
    .await;
    // The fleet (this gateway, registered in the same ZooKeeper) is listed.
    page_until(
        &page,
        "this gateway in the fleet table",
        WAIT,
        "[...document.querySelectorAll('#fleet tbody tr')].some(tr => tr.textContent.includes('(this)'))",
    )
    .await;
    let crown: String = eval(&page, "document.getElementById('leader').textContent").await;
    assert!(crown.starts_with('♛'), "leader header: {crown:?}");
    // Set on this document: a reload would drop it.
    let _: u32 = eval(&page, "window.__kgwLoaded = 42").await;

    // A node stops: the same page shows it gone within 3 s.
    let gone = format!(
        "!document.querySelector('#nodes tbody').textContent.includes({})",
        js_string(&query.addr())
    );
    assert!(
        !eval::<bool>(&page, &gone).await,
        "the query node is listed"
    );
    let stopped = Instant::now();
    query.process_signal_term();
    let seen = page_until(&page, "the stopped node gone", WAIT, &gone).await;
    let took = seen - stopped;
    println!("stopped node gone from the page after {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    query.terminate();

    // The leader stops: the timeline shows the change to the other node.
    first.terminate();
    page_until(
        &page,
        "the leader change on the timeline",
        WAIT,
        &format!(
            "[...document.querySelectorAll('#events li[data-kind=leader]')]\
             .some(li => li.textContent.includes({}))",
            js_string(&format!("→ {second_id}"))
        ),
    )
    .await;
    page_until(
        &page,
        "the new leader in the header",
        WAIT,
        &format!(
            "document.getElementById('leader').textContent.includes({})",
            js_string(&second_id)
        ),
    )
    .await;
    let same_document: bool = eval(&page, "window.__kgwLoaded === 42").await;
    assert!(same_document, "the page was reloaded");

    let screenshot = dir.path.join("status-page.png");
    let png = page
        .save_screenshot(
            ScreenshotParams::builder().full_page(true).build(),
            &screenshot,
        )
        .await
        .expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", screenshot.display());
    if let Ok(keep) = std::env::var("KGW_SCREENSHOT_DIR") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&screenshot, Path::new(&keep).join("status-page.png")).unwrap();
    }
    chromium.close().await;
}
