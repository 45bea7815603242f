//! Memory measured from outside the allocator's view: the process's resident set, and a test run
//! in a process of its own so that what earlier tests freed does not hide growth.

use std::time::Duration;

/// Runs the ignored test `name` of this binary in a process of its own and checks that it
/// passed. For the tests that measure RSS: the tests of one binary share a process, and the
/// allocator keeps (and hands out again) what earlier tests freed, which would hide growth.
pub fn run_alone(name: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let log = std::env::temp_dir().join(format!("comet-hostile-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = std::process::Command::new(exe)
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("start the test binary");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the test binary") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    eprintln!("{output}");
    assert!(status.success(), "{name} failed in its own process:\n{output}");
    assert!(output.contains("1 passed"), "{name} did not run:\n{output}");
}

/// The resident set size of this process, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// A mebibyte.
pub const MIB: u64 = 1024 * 1024;
