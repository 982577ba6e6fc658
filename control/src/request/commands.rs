//! The table of every command the API accepts, which the parser consults first.

use crate::errors::ApiError;

/// Every command the API accepts, as `(class, subclass, cmd)`. A frame's command is looked up
/// here before it is parsed: what is not listed is `unknown_command`, so this table is the
/// whole API (docs/api.md documents each entry; the `docs` test checks that).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("core", "user", "login"),
    ("core", "event", "subscribe"),
    ("core", "event", "unsubscribe"),
    ("media", "session", "create"),
    ("media", "session", "destroy"),
    ("media", "session", "set_answer"),
    ("media", "session", "get_offer"),
    ("media", "session", "get_answer"),
    ("media", "session", "get_proxy_offer"),
    ("media", "session", "get_info"),
    ("media", "session", "get_list"),
    ("media", "session", "update_media"),
    ("media", "session", "set_type"),
    ("media", "session", "recorder_action"),
    ("media", "session", "set_candidate"),
    ("media", "session", "set_candidate_end"),
    ("media", "room", "create"),
    ("media", "room", "destroy"),
    ("media", "room", "get_info"),
    ("media", "room", "get_list"),
    ("media", "node", "drain"),
    ("media", "node", "get_list"),
];

/// The subclass a frame without one means: `core` → `user` (login), `media` → `session`.
fn default_subclass(class: &str) -> &'static str {
    match class {
        "core" => "user",
        "media" => "session",
        _ => "",
    }
}

/// The [`COMMANDS`] entry a frame names, or `unknown_command`.
pub(super) fn lookup(
    class: &str,
    subclass: Option<&str>,
    cmd: &str,
) -> Result<(&'static str, &'static str, &'static str), ApiError> {
    let subclass = subclass
        .filter(|s| !s.is_empty())
        .unwrap_or(default_subclass(class));
    COMMANDS
        .iter()
        .copied()
        .find(|&(c, s, m)| c == class && s == subclass && m == cmd)
        .ok_or_else(|| ApiError::unknown_command(&format!("{class}/{subclass}/{cmd}")))
}

/// A [`COMMANDS`] entry without a parser: a bug, which `every_listed_command_is_parsed`
/// catches; a client would see `unknown_command`.
pub(super) fn unlisted((class, subclass, cmd): (&str, &str, &str)) -> ApiError {
    ApiError::unknown_command(&format!("{class}/{subclass}/{cmd}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;
    use crate::request::{Frame, Request, parse_frame};
    use serde_json::json;

    fn code(v: serde_json::Value) -> Option<ErrorCode> {
        parse_frame(&v.to_string()).err().map(|e| e.error.code)
    }

    #[test]
    fn every_listed_command_is_parsed() {
        for &(class, subclass, cmd) in COMMANDS {
            let v = json!({"class": class, "subclass": subclass, "cmd": cmd, "tid": 1});
            assert_ne!(
                code(v),
                Some(ErrorCode::UnknownCommand),
                "{class}/{subclass}/{cmd}"
            );
        }
        let mut sorted = COMMANDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), COMMANDS.len(), "each listed once");
    }

    #[test]
    fn a_missing_subclass_means_the_class_default() {
        let v = json!({"class": "media", "cmd": "get_list", "tid": 1});
        assert!(matches!(
            parse_frame(&v.to_string()),
            Ok(Frame::Request {
                request: Request::GetList,
                ..
            })
        ));
        let v = json!({"class": "core", "cmd": "subscribe", "tid": 1});
        assert_eq!(code(v), Some(ErrorCode::UnknownCommand));
        let v = json!({"class": "media", "subclass": "room", "cmd": "set_type", "tid": 1});
        assert_eq!(code(v), Some(ErrorCode::UnknownCommand));
    }
}
