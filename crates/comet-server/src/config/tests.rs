//! The configuration's loading, validation and example file.

use std::path::Path;

use super::Config;

#[test]
fn env_overrides_file_and_defaults() {
    let dir = std::env::temp_dir().join(format!("comet-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("comet.toml");
    std::fs::write(
        &file,
        "history_size = 10\nheartbeat_secs = 5\nlisten = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let env = [
        ("COMET_HISTORY_SIZE".to_owned(), "20".to_owned()),
        ("COMET_DEMO".to_owned(), "true".to_owned()),
        ("COMET_SERVER".to_owned(), "http://x".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ];
    let c = Config::load(Some(&file), env).unwrap();
    assert_eq!(c.history_size, 20);
    assert_eq!(c.heartbeat_secs, 5);
    assert!(c.demo);
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.max_batch, Config::default().max_batch);
}

#[test]
fn the_websocket_limit_must_carry_a_largest_publish() {
    let env = [("COMET_MAX_MESSAGE_SIZE".to_owned(), "200000".to_owned())];
    let err = Config::load(None, env).unwrap_err();
    assert!(
        err.to_string()
            .contains("ws_max_message_size (131072) must be at least"),
        "{err}"
    );
}

#[test]
fn broker_urls_without_tls_support_or_with_passwords_are_refused_clearly() {
    let load = |url: &str| Config::load(None, [("COMET_BROKER".to_owned(), url.to_owned())]);
    let err = load("rediss://:pw@redis.example:6380").unwrap_err().to_string();
    assert!(
        err.contains("rediss:// (TLS to Redis) is not built into this server"),
        "{err}"
    );
    assert!(!err.contains("pw"), "{err}");
    let err = load("redis-cluster://:hunter2@h:1").unwrap_err().to_string();
    assert!(err.contains("got a redis-cluster:// URL"), "{err}");
    assert!(!err.contains("hunter2"), "the password is not repeated: {err}");
    assert!(load("redis://:pw@127.0.0.1:6379").is_ok());
}

#[test]
fn bad_values_are_named() {
    let err = Config::load(None, [("COMET_HISTORY_SIZE".to_owned(), "0".to_owned())]).unwrap_err();
    assert!(err.to_string().contains("history_size must be at least 1"), "{err}");
    let err = Config::load(None, [("COMET_HEARTBEAT_SECS".to_owned(), "soon".to_owned())]).unwrap_err();
    assert!(err.to_string().contains("invalid type"), "{err}");
    let dir = std::env::temp_dir().join(format!("comet-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "histroy_size = 1\n").unwrap();
    let err = Config::load(Some(&file), []).unwrap_err();
    assert!(err.to_string().contains("unknown field `histroy_size`"), "{err}");
    assert!(Config::load(Some(Path::new("/nonexistent/comet.toml")), []).is_err());
}

#[test]
fn secrets_from_the_environment_stay_text() {
    let env = [
        ("COMET_PUBLISH_API_KEY".to_owned(), "12345".to_owned()),
        ("COMET_ALLOWED_ORIGINS".to_owned(), "[\"https://a.example\"]".to_owned()),
    ];
    let c = Config::load(None, env).unwrap();
    assert_eq!(c.publish_api_key.expose(), "12345");
    assert_eq!(c.allowed_origins, ["https://a.example"]);
    let bad = [("COMET_ALLOWED_ORIGINS".to_owned(), "[\"*\"]".to_owned())];
    assert!(
        Config::load(None, bad)
            .unwrap_err()
            .to_string()
            .contains("allowed_origins")
    );
}

#[test]
fn the_example_file_shows_the_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/comet.toml");
    assert_eq!(Config::load(Some(&file), []).unwrap(), Config::default());
    let text = std::fs::read_to_string(&file).unwrap();
    for key in Config::KEYS {
        // Tables cannot be shown with a default value: the example shows one, commented out.
        let shown = if *key == "namespace" {
            "\n# [namespace.".to_owned()
        } else {
            format!("\n{key} = ")
        };
        assert!(text.contains(&shown), "deploy/comet.toml does not show {key}");
    }
}

#[test]
fn every_key_is_listed() {
    for key in Config::KEYS {
        let value = if *key == "listen" || *key == "broker" || *key == "internal_listen" {
            "\"127.0.0.1:1\"".to_owned()
        } else if ["demo", "ws_compression", "admin_api"].contains(key) {
            "true".to_owned()
        } else if key.starts_with("jwt_") && !key.ends_with("_secs")
            || [
                "token_cookie",
                "publish_api_key",
                "tls_cert_file",
                "tls_key_file",
                "ws_echo",
                "webhook_url",
                "webhook_secret",
                "connect_hook_url",
                "subscribe_hook_url",
                "publish_hook_url",
                "admin_api_key",
                "data_dir",
                "fsync",
            ]
            .contains(key)
        {
            "\"x\"".to_owned()
        } else if *key == "allowed_origins" || *key == "hook_forward_headers" {
            "[\"https://example.com\"]".to_owned()
        } else if *key == "namespace" {
            "{ chat = { anonymous_subscribe = false } }".to_owned()
        } else {
            "300".to_owned()
        };
        let text = format!("{key} = {value}");
        let parsed: Result<Config, _> = toml::from_str(&text);
        assert!(parsed.is_ok(), "{key}: {parsed:?}");
    }
}

#[test]
fn the_durability_settings_are_checked() {
    let load = |pairs: &[(&str, &str)]| {
        let env: Vec<(String, String)> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::load(None, env)
    };
    let c = load(&[("COMET_DATA_DIR", "/var/lib/comet"), ("COMET_FSYNC", "always")]).unwrap();
    assert_eq!(c.data_dir, "/var/lib/comet");
    assert_eq!(c.fsync, "always");
    assert_eq!(c.fsync_window_ms, 5);
    let err = load(&[("COMET_FSYNC", "sometimes")]).unwrap_err().to_string();
    assert!(
        err.contains("fsync must be \"batch\", \"always\" or \"never\""),
        "{err}"
    );
    let err = load(&[("COMET_FSYNC_WINDOW_MS", "5000")]).unwrap_err().to_string();
    assert!(err.contains("fsync_window_ms must be at most 1000"), "{err}");
    let err = load(&[
        ("COMET_DATA_DIR", "/var/lib/comet"),
        ("COMET_BROKER", "redis://127.0.0.1:6379"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("data_dir keeps the embedded broker's history"), "{err}");
}
