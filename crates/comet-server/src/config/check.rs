//! [`check_text`]: every problem of a configuration file, each with its line, and for an unknown
//! key the nearest valid one (`comet config check FILE`, and `comet serve` when its file does
//! not load).

use toml::de::{DeTable, DeValue};

use super::Config;
use crate::auth::NamespaceRules;

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line it is on (1-based), where it can be placed.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The line (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The valid name nearest to `key` among `names`, if one is near enough to be what was meant.
fn nearest<'a>(key: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|name| (strsim::damerau_levenshtein(key, name), *name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(2))
        .min()
        .map(|(_, name)| name)
}

fn unknown(key: &str, names: &[&str], what: &str) -> String {
    match nearest(key, names) {
        Some(name) => format!("unknown {what} `{key}`; did you mean `{name}`?"),
        None => format!("unknown {what} `{key}`"),
    }
}

/// Every problem of the configuration file `text`: its syntax, unknown keys (with the nearest
/// valid one), values of the wrong type or out of range, each with its line; then the checks
/// across settings that `Config::validate` makes (placed at the first key they name). Empty
/// when the file is good. The environment is not read.
pub fn check_text(text: &str) -> Vec<Problem> {
    let (document, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return errors
            .into_iter()
            .map(|e| Problem {
                line: e.span().map(|span| line_of(text, span.start)),
                message: e.message().trim_end().to_owned(),
            })
            .collect();
    }
    let Ok(table) = text.parse::<toml::Table>() else {
        return vec![Problem {
            line: None,
            message: "the file is not TOML".into(),
        }];
    };
    let mut problems = Vec::new();
    let mut lines = std::collections::HashMap::new();
    // Keys whose problems are already said (in more detail than the type check would).
    let mut flagged = std::collections::HashSet::new();
    for (key, value) in document.get_ref() {
        let name: &str = key.get_ref();
        let line = line_of(text, key.span().start);
        lines.insert(name.to_owned(), line);
        if !Config::KEYS.contains(&name) {
            problems.push(Problem {
                line: Some(line),
                message: unknown(name, Config::KEYS, "setting"),
            });
            continue;
        }
        if name == "namespace"
            && let DeValue::Table(namespaces) = value.get_ref()
        {
            let found = check_namespaces(text, namespaces);
            if !found.is_empty() {
                flagged.insert(name.to_owned());
            }
            problems.extend(found);
        }
    }
    // Each known key alone, so a wrong value is placed at its own line.
    for (key, value) in &table {
        if !Config::KEYS.contains(&key.as_str()) || flagged.contains(key) {
            continue;
        }
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = toml::Value::Table(alone).try_into::<Config>() {
            problems.push(Problem {
                line: lines.get(key).copied(),
                message: format!("{key}: {}", e.message().trim_end()),
            });
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return problems;
    }
    let loaded: Result<Config, _> = toml::Value::Table(table).try_into();
    match loaded
        .map_err(|e| e.message().to_owned())
        .and_then(|c| c.validate().map_err(|e| e.to_string()))
    {
        Ok(()) => Vec::new(),
        Err(message) => {
            // Placed at the first setting the message names that the file sets.
            let line = Config::KEYS
                .iter()
                .filter(|key| message.contains(**key))
                .filter_map(|key| lines.get(*key))
                .min()
                .copied();
            vec![Problem { line, message }]
        }
    }
}

/// The unknown rules of `[namespace."…"]` tables.
fn check_namespaces(text: &str, namespaces: &DeTable<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, rules) in namespaces {
        let DeValue::Table(rules) = rules.get_ref() else {
            continue; // the type check says what is wrong
        };
        for (rule, _) in rules {
            if !NamespaceRules::KEYS.contains(&rule.get_ref().as_ref()) {
                let ns: &str = name.get_ref();
                problems.push(Problem {
                    line: Some(line_of(text, rule.span().start)),
                    message: format!(
                        "[namespace.{ns:?}]: {}",
                        unknown(rule.get_ref(), NamespaceRules::KEYS, "rule")
                    ),
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        check_text(text).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_problem_has_its_line_and_unknown_keys_their_nearest_name() {
        assert!(check("history_size = 10\n").is_empty());
        assert_eq!(
            check("# a comment\nhistroy_size = 10\nlisten = \"127.0.0.1:1\"\nmax_conections = 3\nfrobnicate = 1\n"),
            [
                "line 2: unknown setting `histroy_size`; did you mean `history_size`?",
                "line 4: unknown setting `max_conections`; did you mean `max_connections`?",
                "line 5: unknown setting `frobnicate`",
            ]
        );
        let wrong = check("history_size = 10\nheartbeat_secs = \"soon\"\n");
        assert_eq!(wrong.len(), 1);
        assert!(
            wrong[0].starts_with("line 2: heartbeat_secs: invalid type"),
            "{wrong:?}"
        );
        assert_eq!(
            check("[namespace.chat]\npresense = true\n"),
            ["line 2: [namespace.\"chat\"]: unknown rule `presense`; did you mean `presence`?"]
        );
        let syntax = check("history_size = 10\nlisten = \n");
        assert!(syntax[0].starts_with("line 2: "), "{syntax:?}");
        let across = check("longpoll_timeout_secs = 60\nlongpoll_max_timeout_secs = 30\n");
        assert_eq!(across.len(), 1);
        assert!(
            across[0].starts_with("line 1: invalid configuration: longpoll_timeout_secs"),
            "{across:?}"
        );
    }

    #[test]
    fn the_rule_names_are_every_field_of_the_namespace_rules() {
        for rule in NamespaceRules::KEYS {
            let value = if rule.ends_with("_size") || rule.ends_with("_secs") {
                "3"
            } else {
                "true"
            };
            let text = format!("[namespace.chat]\n{rule} = {value}\n");
            let parsed: Result<Config, _> = toml::from_str(&text);
            assert!(parsed.is_ok(), "{rule}: {parsed:?}");
        }
        // Every field, by name: a field added to the rules fails to compile here until it is
        // listed too.
        let NamespaceRules {
            anonymous_subscribe: _,
            anonymous_publish: _,
            client_publish: _,
            max_message_size: _,
            history_size: _,
            history_ttl_secs: _,
            presence: _,
            join_leave: _,
            subscribe_hook: _,
            publish_hook: _,
        } = NamespaceRules::default();
        assert_eq!(NamespaceRules::KEYS.len(), 10);
    }
}
