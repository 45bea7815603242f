//! `comet serve` with TLS as a real process: SIGHUP reloads the certificate for new connections,
//! and a SIGHUP with bad files keeps the old one and the server alive. Certificates come from a
//! CA made at test time (comet-test-support `pki`); the client (rustls) verifies against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use comet_test_support::pki::Pki;
use rustls::pki_types::{CertificateDer, ServerName};

const BIN: &str = env!("CARGO_BIN_EXE_comet");

/// `comet serve` over TLS on a free port; killed by PID when dropped.
struct Served {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl Served {
    fn start(pki: &Pki) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("COMET_TLS_CERT_FILE", pki.cert_file())
            .env("COMET_TLS_KEY_FILE", pki.key_file())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn comet serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut served = Served {
            child,
            addr: String::new(),
            log,
        };
        let line = served.wait_log("listening on https://");
        let rest = line.split("listening on https://").nth(1).unwrap();
        served.addr = rest.trim_end_matches('/').split('/').next().unwrap().to_owned();
        served
    }

    /// The next log line containing `what` (bounded).
    fn wait_log(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("comet serve did not log {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// `GET /healthz` over a new TLS connection: the certificate served and the response.
    fn get(&self, pki: &Pki) -> (CertificateDer<'static>, String) {
        let tcp = TcpStream::connect(&self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(&[b"http/1.1"]), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .expect("TLS handshake and request");
        let mut response = Vec::new();
        // Reads to the server's close; an EOF without close_notify still leaves what came.
        let _ = tls.read_to_end(&mut response);
        let cert = tls.conn.peer_certificates().expect("a server certificate")[0].clone();
        (cert, String::from_utf8_lossy(&response).into_owned())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_it_when_the_files_are_bad() {
    let pki = Pki::new("sighup");
    let (a, b) = (pki.leaf("cert A"), pki.leaf("cert B"));
    pki.write(&a);
    let mut served = Served::start(&pki);
    let (cert, response) = served.get(&pki);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response:?}");
    assert_eq!(cert, a.der, "serves A at start");

    pki.write(&b);
    served.signal("-HUP");
    served.wait_log("TLS certificate reloaded");
    let (cert, response) = served.get(&pki);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response:?}");
    assert_eq!(cert, b.der, "a new connection gets B after SIGHUP");

    std::fs::write(pki.cert_file(), "garbage, not PEM\n").unwrap();
    served.signal("-HUP");
    let error = served.wait_log("TLS certificate not reloaded");
    assert!(
        error.contains("ERROR") && error.contains("tls_cert_file") && error.contains("no CERTIFICATE block"),
        "{error}"
    );
    let (cert, response) = served.get(&pki);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response:?}");
    assert_eq!(cert, b.der, "still B after a SIGHUP with bad files");
    assert!(served.child.try_wait().unwrap().is_none(), "comet serve died");

    served.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "comet serve did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn a_bad_certificate_fails_the_start() {
    let pki = Pki::new("bad-start");
    let a = pki.leaf("cert A");
    pki.write(&a);
    std::fs::write(pki.key_file(), "not a key\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("COMET_TLS_CERT_FILE", pki.cert_file())
        .env("COMET_TLS_KEY_FILE", pki.key_file())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn comet serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("comet serve started with a bad key");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(
        stderr.contains("tls_key_file") && stderr.contains("key.pem") && stderr.contains("no PRIVATE KEY"),
        "{stderr}"
    );
}
