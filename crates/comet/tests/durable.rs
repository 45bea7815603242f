//! `comet serve --data-dir` as a process (docs/protocol.md "Durability"): `kill -9` under
//! `fsync = "never"` gives an honest gap notice, a full disk refuses publishes with `507`, keeps
//! serving subscribers, and takes publishes again once there is room, and a damaged file stops
//! the start with its name. (A `kill -9`
//! under `fsync = "batch"`, with subscribers of all six transports resuming by cursor, is the
//! chaos suite's `durable` scenario, tests/chaos.rs.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comet_chaos::procs::{free_port, scratch_dir};
use comet_test_support::{BodyReader, SOON, get_json, recv_timeout};
use serde_json::Value;

/// A `comet serve` process, killed by PID when dropped.
struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Serve {
    /// Starts `comet serve` with `toml` (plus `listen`), under `prlimit --fsize=BYTES` if given,
    /// and waits for its port.
    fn start(dir: &Path, toml: &str, fsize: Option<u64>) -> Self {
        let port = free_port();
        let config = dir.join(format!("comet-{port}.toml"));
        std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n{toml}\n")).unwrap();
        let log = dir.join(format!("comet-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let bin = env!("CARGO_BIN_EXE_comet");
        let mut cmd = match fsize {
            Some(bytes) => {
                let mut c = Command::new("prlimit");
                // The soft limit only: the test lifts it later, and raising a hard limit needs
                // a privilege the tests do not have.
                c.arg(format!("--fsize={bytes}:unlimited")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("start comet serve");
        let serve = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "comet serve did not start:\n{}",
                serve.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn publish(url: &str, channel: &str, body: String) -> reqwest::Response {
    recv_timeout(
        SOON,
        reqwest::Client::new()
            .post(format!("{url}/pub/{channel}"))
            .body(body)
            .send(),
    )
    .await
    .expect("publish")
}

async fn poll(url: &str, channel: &str, since: &str) -> Value {
    get_json(&format!("{url}/sub/{channel}?transport=poll&since={since}"), 200).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fsync_never_a_crash_gives_an_honest_gap_notice_never_a_reused_cursor() {
    let dir = scratch_dir("durable-never");
    let toml = format!("data_dir = {:?}\nfsync = \"never\"\n", dir.join("data"));
    let mut serve = Serve::start(&dir, &toml, None);
    // A subscriber that joined news:y while it was empty holds `<empty epoch>-0`.
    let empty = get_json(&format!("{}/sub/news:y?transport=poll", serve.url()), 200).await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(empty.ends_with("-0"), "{empty}");
    for i in 0..2 {
        assert_eq!(publish(&serve.url(), "news:y", format!("y{i}")).await.status(), 201);
    }
    let mut last = String::new();
    for i in 0..5 {
        let res = publish(&serve.url(), "news:x", format!("before {i}")).await;
        assert_eq!(res.status(), 201);
        last = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    }
    serve.kill();
    let serve = Serve::start(&dir, &toml, None);
    let res = publish(&serve.url(), "news:x", "after".into()).await;
    assert_eq!(res.status(), 201);
    let after = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_ne!(
        after.split('-').next(),
        last.split('-').next(),
        "the same epoch after a crash under fsync = never"
    );
    // A subscriber that saw the last message before the crash is told of a gap, then gets the
    // new message: nothing silently missing, no cursor named twice.
    let answer = poll(&serve.url(), "news:x", &last).await;
    let messages = answer["messages"].as_array().unwrap();
    assert_eq!(answer["gap"], true, "{answer}");
    assert_eq!(messages.last().unwrap()["data"], "after", "{answer}");
    assert!(serve.log_text().contains("new epoch"), "{}", serve.log_text());
    // What was published to news:y may be lost: its old empty epoch is not resumed either.
    let answer = poll(&serve.url(), "news:y", &empty).await;
    assert_eq!(
        answer["gap"], true,
        "a cursor of the old empty epoch resumed silently: {answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_with_507_keeps_serving_subscribers_and_recovers() {
    let dir = scratch_dir("durable-full");
    let toml = format!(
        "data_dir = {:?}\nhistory_size = 100000\npublishes_per_sec = 0\n",
        dir.join("data")
    );
    // Files of this process may not grow past 3 MiB (EFBIG, as a full disk gives ENOSPC).
    let serve = Serve::start(&dir, &toml, Some(3 << 20));
    let url = serve.url();
    let res = recv_timeout(SOON, reqwest::get(format!("{url}/sub/big:x?transport=sse")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = BodyReader::new(res);
    let mut acked: Vec<String> = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let res = publish(&url, "big:x", format!("{i:04}{}", "z".repeat(60_000))).await;
        match res.status().as_u16() {
            201 => acked.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()),
            507 => {
                refused = Some(res.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("publish {i} answered {other}: {}", res.text().await.unwrap_or_default()),
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("200 publishes of 60 KB fit in 3 MiB?\n{}", serve.log_text()));
    assert_eq!(refused["error"]["code"], "storage_full", "{refused}");
    assert!(
        acked.len() > 5,
        "only {} publishes before the disk was full",
        acked.len()
    );
    // Still full: refused again, and nothing else broke.
    let again = publish(&url, "big:x", "y".repeat(60_000)).await;
    assert_eq!(again.status(), 507);
    let ready = recv_timeout(SOON, reqwest::get(format!("{url}/readyz"))).await.unwrap();
    assert_eq!(ready.status(), 200, "readyz after the disk filled");
    // The live subscriber got exactly the acknowledged messages, in order.
    let last = acked.last().unwrap().clone();
    // Whole: a 60 KB event's `id:` line can arrive before the rest of it.
    let marker = format!("id: {last}\n");
    sse.until("every acknowledged message", |b| {
        b.find(&marker).is_some_and(|at| b[at..].contains("\n\n"))
    })
    .await;
    let ids: Vec<String> = sse
        .sse_events()
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(ids, acked, "delivered live");
    // History still answers from the start, and a small publish to a quiet channel may still
    // find room freed by nothing: either way it is a clear answer, 201 or 507.
    let mut polled: Vec<String> = Vec::new();
    let mut since = "earliest".to_owned();
    for _ in 0..50 {
        let answer = poll(&url, "big:x", &since).await;
        let page = answer["messages"].as_array().unwrap();
        if page.is_empty() {
            break;
        }
        polled.extend(page.iter().map(|m| m["id"].as_str().unwrap().to_owned()));
        since = answer["cursor"].as_str().unwrap().to_owned();
    }
    assert_eq!(polled, acked, "history read by polls");
    let small = publish(&url, "other:y", "tiny".into()).await;
    assert!(matches!(small.status().as_u16(), 201 | 507), "{}", small.status());

    // Room again (the limit lifted on the running process, as an operator frees a disk):
    // publishes are taken again, within a few seconds, and go on from the last acknowledged
    // cursor: the refused ones took none, so the subscriber that stayed sees no gap.
    let lifted = Command::new("prlimit")
        .arg(format!("--pid={}", serve.child.id()))
        .arg("--fsize=unlimited:unlimited")
        .status()
        .expect("run prlimit");
    assert!(lifted.success(), "prlimit could not lift the file size limit");
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let res = publish(&url, "big:x", "after".into()).await;
        match res.status().as_u16() {
            201 => break res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned(),
            507 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!(
                "a publish after the disk had room again answered {other}: {}\n{}",
                res.text().await.unwrap_or_default(),
                serve.log_text()
            ),
        }
    };
    let cursor = |id: &str| {
        let (epoch, offset) = id.split_once('-').unwrap();
        (epoch.to_owned(), offset.parse::<u64>().unwrap())
    };
    let (last_epoch, last_offset) = cursor(&last);
    assert_eq!(cursor(&next), (last_epoch, last_offset + 1), "the cursor after {last}");
    let marker = format!("id: {next}\n");
    sse.until("the publish after the disk had room", |b| {
        b.find(&marker).is_some_and(|at| b[at..].contains("\n\n"))
    })
    .await;
    let events = sse.sse_events();
    assert!(
        events.iter().all(|(_, event, _)| event != "comet.gap"),
        "a gap notice where nothing was lost: {events:?}"
    );
    let ids: Vec<String> = events
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(ids.last(), Some(&next));
    assert_eq!(ids.len(), acked.len() + 1, "delivered once each");
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_stops_the_start_with_its_name() {
    let dir = scratch_dir("durable-damaged");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("comet.redb");
    std::fs::write(&file, b"this is not a redb file, but it is where one should be\n").unwrap();
    let port = free_port();
    let out = recv_timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_comet"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .env("RUST_BACKTRACE", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("comet serve");
    assert!(!out.status.success(), "comet serve started on a damaged file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&file.display().to_string()),
        "the error does not name the file:\n{stderr}"
    );
    assert!(stderr.contains("move it aside"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
