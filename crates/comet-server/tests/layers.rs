//! The source tree's shape, as src/lib.rs describes it: layers whose imports point one way, no
//! transport importing the dispatcher above it, and no source file over 500 lines.
//!
//! Reads `src/` as text: every `crate::name` outside comments and test modules is an import of
//! `name`'s module (grouped `crate::{a, b}` too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, top first: a module may import its own layer and those below it.
const LAYERS: &[(&str, u8)] = &[
    ("conn", 1),
    ("http", 2),
    ("transport", 3),
    ("publish", 4),
    ("state", 5),
    ("auth", 6),
    ("limits", 6),
    ("metrics", 6),
    ("nodes", 6),
    ("webhooks", 6),
    ("hooks", 6),
    ("kind", 7),
    ("client_id", 7),
    ("error", 7),
    ("io", 7),
];

/// `config` is the edge, outside the layers: it turns the file's keys into each subsystem's
/// section and has the subsystem check it, so it may import those sections (and the types they
/// hold) and those checks, and nothing else.
const CONFIG_MAY_IMPORT: &[&str] = &[
    "auth::AuthConfig",
    "auth::{NamespaceRules",
    "auth::NamespaceRules",
    "auth::validate(",
    "conn::tls::TlsConfig",
    "conn::tls::validate(",
    "hooks::HookConfig",
    "hooks::validate(",
    "limits::LimitsConfig",
    "transport::sse::SseConfig",
    "transport::websocket::WsConfig",
    "webhooks::WebhookConfig",
    "webhooks::validate(",
];

/// Folders whose files may import their siblings but not their parent `mod.rs`.
const NO_PARENT_IMPORTS: &[&str] = &["conn", "http", "transport", "transport/websocket"];

const MAX_LINES: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file, by its path under `src/`, with its code: comment lines dropped, and
/// nothing from the first `#[cfg(test)]` on.
fn sources() -> BTreeMap<String, Vec<String>> {
    let mut paths = Vec::new();
    files(&src(), &mut paths);
    assert!(paths.len() > 30, "the source tree was not found: {paths:?}");
    paths
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(src()).unwrap().to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .lines()
                .take_while(|line| line.trim() != "#[cfg(test)]")
                .filter(|line| !line.trim_start().starts_with("//"))
                .map(str::to_owned)
                .collect();
            (name, code)
        })
        .collect()
}

/// The top-level module a file belongs to (`conn/h1.rs` → `conn`, `state.rs` → `state`).
fn module_of(file: &str) -> &str {
    file.split('/').next().unwrap().trim_end_matches(".rs")
}

/// The modules `code` imports through `crate::`, with the text after `crate::`.
fn crate_imports(code: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in code {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match after.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|item| item.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![
                    after
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap_or(""),
                ],
            };
            let shown = after.split([';', ' ', ')']).next().unwrap_or("").to_owned();
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                out.push((name.to_owned(), shown.clone()));
            }
            rest = after;
        }
    }
    out
}

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, rank)| *rank)
}

/// Items re-exported at the crate root, by the module they live in.
fn root_item(name: &str) -> Option<&'static str> {
    match name {
        "Config" | "ConfigError" => Some("config"),
        "AppState" => Some("state"),
        "ApiError" => Some("error"),
        "Tls" | "TlsError" | "serve" | "serve_with_tls" | "bind" | "raise_fd_limit" => Some("conn"),
        "app" => Some("http"),
        _ => None,
    }
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let mut wrong = Vec::new();
    for (file, code) in sources() {
        let module = module_of(&file);
        if module == "lib" {
            continue;
        }
        for (name, shown) in crate_imports(&code) {
            let target = root_item(&name).unwrap_or(&name);
            if target == module {
                continue;
            }
            if module == "config" {
                if !CONFIG_MAY_IMPORT.iter().any(|allowed| shown.starts_with(allowed)) {
                    wrong.push(format!("{file}: config imports crate::{shown}, not a section"));
                }
                continue;
            }
            if target == "config" {
                // Only the edge's own users: the state that holds it and the router built from it.
                if !["state", "http"].contains(&module) {
                    wrong.push(format!("{file}: imports crate::{shown}; take the subsystem's section"));
                }
                continue;
            }
            let (Some(from), Some(to)) = (rank(module), rank(target)) else {
                wrong.push(format!(
                    "{file}: crate::{shown}: module {module} or {target} has no layer"
                ));
                continue;
            };
            if to < from {
                wrong.push(format!(
                    "{file} ({module}, layer {from}) imports crate::{shown} (layer {to}, above it)"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn files_below_a_dispatcher_import_their_siblings_not_their_parent() {
    let mut wrong = Vec::new();
    let sources = sources();
    for folder in NO_PARENT_IMPORTS {
        let siblings: Vec<String> = sources
            .keys()
            .filter_map(|file| file.strip_prefix(&format!("{folder}/")))
            .map(|rest| rest.split('/').next().unwrap().trim_end_matches(".rs").to_owned())
            .collect();
        for (file, code) in &sources {
            let Some(rest) = file.strip_prefix(&format!("{folder}/")) else {
                continue;
            };
            if rest.contains('/') || rest == "mod.rs" {
                continue;
            }
            // Top-level `use super::…` only: an inline module's `super` is its own file.
            for line in code.iter().filter(|l| l.starts_with("use super::")) {
                let after = &line["use super::".len()..];
                let items: Vec<&str> = match after.strip_prefix('{') {
                    Some(group) => group
                        .split(',')
                        .map(|i| i.trim().split("::").next().unwrap_or(""))
                        .collect(),
                    None => vec![after.split("::").next().unwrap_or("").trim_end_matches(';')],
                };
                for item in items.into_iter().filter(|i| !i.is_empty() && *i != "}") {
                    let item = item.trim_end_matches([';', '}']);
                    if !siblings.iter().any(|s| s == item) {
                        wrong.push(format!("{file}: `{line}` takes {item} from {folder}/mod.rs"));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports from a parent module:\n{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_500_lines() {
    let mut paths = Vec::new();
    files(&src(), &mut paths);
    let long: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}

/// The checker itself: a grouped import and an upward one are seen.
#[test]
fn the_import_reader_sees_grouped_and_plain_imports() {
    let code = vec![
        "use crate::{demo, publish, transport};".to_owned(),
        "let x = crate::io::body::guarded(b, g);".to_owned(),
    ];
    let names: Vec<String> = crate_imports(&code).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["demo", "publish", "transport", "io"]);
    assert!(rank("transport") > rank("http") && rank("io") > rank("auth"));
}
