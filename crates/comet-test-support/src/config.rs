//! Configurations for tests.

use comet_server::Config;

/// The defaults without the per-address limits (`max_connections_per_ip`,
/// `max_longpolls_per_ip` and the rates): every client of a test is 127.0.0.1, one process
/// standing for a thousand clients, and those limits have tests of their own.
pub fn unlimited() -> Config {
    Config {
        max_connections_per_ip: 0,
        max_longpolls_per_ip: 0,
        subscribes_per_sec_per_ip: 0,
        publishes_per_sec: 0,
        ..Config::default()
    }
}
