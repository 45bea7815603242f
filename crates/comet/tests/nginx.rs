//! deploy/nginx.conf in front of a real `comet serve`, with Debian's nginx: every transport
//! works through the proxy (`comet subscribe` over all six, publishing through nginx too).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_comet");

/// A child process stopped by PID on drop: SIGTERM first (an nginx master killed with SIGKILL
/// leaves its workers running), SIGKILL if it has not exited within 5 s.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// deploy/nginx.conf with its two addresses replaced, inside a minimal main configuration.
fn nginx_config(prefix: &std::path::Path, listen: u16, upstream: u16) -> String {
    let snippet = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx.conf"))
        .expect("deploy/nginx.conf");
    assert!(snippet.contains("server 127.0.0.1:8080;") && snippet.contains("listen 80;"));
    let snippet = snippet
        .replace("server 127.0.0.1:8080;", &format!("server 127.0.0.1:{upstream};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"));
    let p = prefix.display();
    format!(
        "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n{snippet}\n}}\n"
    )
}

#[test]
fn every_transport_works_through_the_nginx_config() {
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|n| Command::new(n).arg("-v").output().is_ok());
    let nginx = nginx.expect("nginx is required (scripts/test installs Debian's nginx)");

    let comet_port = free_port();
    let mut comet = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{comet_port}")])
        // As deploy/nginx.conf says: behind the proxy, per-address limits are the proxy's.
        .env("COMET_MAX_CONNECTIONS_PER_IP", "0")
        .env("COMET_MAX_LONGPOLLS_PER_IP", "0")
        .env("COMET_SUBSCRIBES_PER_SEC_PER_IP", "0")
        .env("COMET_PUBLISHES_PER_SEC", "0")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn comet");
    let out = comet.stdout.take().unwrap();
    let _comet = Proc(comet);
    let _log = std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    wait_for_port(comet_port);

    let prefix = std::env::temp_dir().join(format!("comet-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&prefix).unwrap();
    let proxy_port = free_port();
    std::fs::write(prefix.join("nginx.conf"), nginx_config(&prefix, proxy_port, comet_port)).unwrap();
    let check = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let proxy = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let _proxy = Proc(proxy);
    wait_for_port(proxy_port);

    let server = format!("http://127.0.0.1:{proxy_port}");
    let comet_cmd = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("COMET_SERVER", &server);
        cmd
    };
    let publish = |data: &str| {
        let out = comet_cmd(&["publish", "proxied", data]).output().unwrap();
        assert!(
            out.status.success(),
            "publish through nginx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let start = publish("m0");
    let transports = ["poll", "longpoll", "stream", "iframe", "sse", "ws"];
    let mut subs: Vec<(&str, Proc)> = transports
        .iter()
        .map(|t| {
            let child = comet_cmd(&[
                "subscribe",
                "proxied",
                "--transport",
                t,
                "--since",
                &start,
                "--count",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
            (*t, Proc(child))
        })
        .collect();
    // Streams must arrive message by message (no proxy buffering): publish one, let it through,
    // then the second.
    std::thread::sleep(Duration::from_millis(300));
    let first = publish("through nginx");
    std::thread::sleep(Duration::from_millis(300));
    let second = publish("twice");
    for (transport, Proc(child)) in &mut subs {
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{transport}: no 2 messages through nginx");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{transport}: {stdout} {stderr}");
        assert_eq!(lines[0]["id"], first.as_str(), "{transport}");
        assert_eq!(lines[1]["id"], second.as_str(), "{transport}");
    }
    let _ = std::fs::remove_dir_all(&prefix);
}
