//! Every error code the API returns, in one table.
//!
//! Codes and names are NkSERVICE's (`nkservice_callbacks:error_code/1`, 1000xx) and NkMEDIA's
//! (`nkmedia_callbacks:error_code/1`, 3000xx; its room plugin, 3040xx), so that clients written
//! for NkMedia keep matching on them. The same table gives the `{code, reason}` of `destroyed`
//! events.

use std::fmt;

use serde_json::{Value, json};

/// A stable API error (or stop reason) name with its NkMedia code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // NkSERVICE core.
    InternalError,
    Timeout,
    NotImplemented,
    ProcessDown,
    RegisteredDown,
    UserStop,
    Unauthorized,
    NotAuthenticated,
    InvalidPassword,
    InvalidOperation,
    InvalidParameters,
    UnknownCommand,
    SyntaxError,
    MissingField,
    InvalidValue,
    SessionTimeout,
    SessionStop,
    SessionNotFound,
    /// Sluice's own, in NkSERVICE's range (NkSERVICE has no rate limit code): 100429.
    TooManyRequests,
    // NkMEDIA sessions.
    NoMediaserver,
    OfferNotSet,
    OfferAlreadySet,
    AnswerNotSet,
    AnswerAlreadySet,
    MissingSdp,
    PeerStopped,
    NoActiveRecorder,
    // NkMEDIA rooms.
    RoomNotFound,
    RoomAlreadyExists,
    RoomDestroyed,
    NoRoomMembers,
    InvalidPublisher,
    PublisherStop,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::InternalError,
        ErrorCode::Timeout,
        ErrorCode::NotImplemented,
        ErrorCode::ProcessDown,
        ErrorCode::RegisteredDown,
        ErrorCode::UserStop,
        ErrorCode::Unauthorized,
        ErrorCode::NotAuthenticated,
        ErrorCode::InvalidPassword,
        ErrorCode::InvalidOperation,
        ErrorCode::InvalidParameters,
        ErrorCode::UnknownCommand,
        ErrorCode::SyntaxError,
        ErrorCode::MissingField,
        ErrorCode::InvalidValue,
        ErrorCode::SessionTimeout,
        ErrorCode::SessionStop,
        ErrorCode::SessionNotFound,
        ErrorCode::TooManyRequests,
        ErrorCode::NoMediaserver,
        ErrorCode::OfferNotSet,
        ErrorCode::OfferAlreadySet,
        ErrorCode::AnswerNotSet,
        ErrorCode::AnswerAlreadySet,
        ErrorCode::MissingSdp,
        ErrorCode::PeerStopped,
        ErrorCode::NoActiveRecorder,
        ErrorCode::RoomNotFound,
        ErrorCode::RoomAlreadyExists,
        ErrorCode::RoomDestroyed,
        ErrorCode::NoRoomMembers,
        ErrorCode::InvalidPublisher,
        ErrorCode::PublisherStop,
    ];

    /// `(code, name, default text)`.
    fn entry(self) -> (u32, &'static str, &'static str) {
        match self {
            ErrorCode::InternalError => (100002, "internal_error", "Internal error"),
            ErrorCode::Timeout => (100005, "timeout", "Timeout"),
            ErrorCode::NotImplemented => (100006, "not_implemented", "Not implemented"),
            ErrorCode::ProcessDown => (100009, "process_down", "Process failed"),
            ErrorCode::RegisteredDown => (100010, "registered_down", "Registered process stopped"),
            ErrorCode::UserStop => (100011, "user_stop", "User stop"),
            ErrorCode::Unauthorized => (100030, "unauthorized", "Unauthorized"),
            ErrorCode::NotAuthenticated => (100031, "not_authenticated", "Not authenticated"),
            ErrorCode::InvalidPassword => (100038, "invalid_password", "Invalid password"),
            ErrorCode::InvalidOperation => (100040, "invalid_operation", "Invalid operation"),
            ErrorCode::InvalidParameters => (100041, "invalid_parameters", "Invalid parameters"),
            ErrorCode::UnknownCommand => (100042, "unknown_command", "Unknown command"),
            ErrorCode::SyntaxError => (100044, "syntax_error", "Syntax error"),
            ErrorCode::MissingField => (100045, "missing_field", "Missing field"),
            ErrorCode::InvalidValue => (100046, "invalid_value", "Invalid value"),
            ErrorCode::SessionTimeout => (100060, "session_timeout", "Session timeout"),
            ErrorCode::SessionStop => (100061, "session_stop", "Session stop"),
            ErrorCode::SessionNotFound => (100062, "session_not_found", "Session not found"),
            ErrorCode::TooManyRequests => (100429, "too_many_requests", "Too many requests"),
            ErrorCode::NoMediaserver => (300001, "no_mediaserver", "No mediaserver available"),
            ErrorCode::OfferNotSet => (300010, "offer_not_set", "Offer not set"),
            ErrorCode::OfferAlreadySet => (300011, "offer_already_set", "Offer already set"),
            ErrorCode::AnswerNotSet => (300012, "answer_not_set", "Answer not set"),
            ErrorCode::AnswerAlreadySet => (300013, "answer_already_set", "Answer already set"),
            ErrorCode::MissingSdp => (300015, "missing_sdp", "Missing SDP"),
            ErrorCode::PeerStopped => (300021, "peer_stopped", "Peer session stopped"),
            ErrorCode::NoActiveRecorder => (300030, "no_active_recorder", "No active recorder"),
            ErrorCode::RoomNotFound => (304001, "room_not_found", "Room not found"),
            ErrorCode::RoomAlreadyExists => (304002, "room_already_exists", "Room already exists"),
            ErrorCode::RoomDestroyed => (304003, "room_destroyed", "Room destroyed"),
            ErrorCode::NoRoomMembers => (304004, "no_room_members", "No remaining room members"),
            ErrorCode::InvalidPublisher => (304005, "invalid_publisher", "Invalid publisher"),
            ErrorCode::PublisherStop => (304006, "publisher_stop", "Publisher stopped"),
        }
    }

    pub fn code(self) -> u32 {
        self.entry().0
    }

    /// The snake_case name (also the `reason` of a `destroyed` event).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    pub fn text(self) -> &'static str {
        self.entry().2
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error reply: a code and an optional detail.
///
/// On the wire, `error` is the code's name (`not_authenticated`), followed by `": detail"`
/// when there is one (`missing_field: type`), so clients can match on the name prefix and
/// people can read why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.error_text())]
pub struct ApiError {
    pub code: ErrorCode,
    /// Empty when the code says it all.
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// Just the code, no detail.
    pub fn plain(code: ErrorCode) -> Self {
        ApiError::new(code, "")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidParameters, message)
    }

    /// `missing_field: NAME`.
    pub fn missing_field(field: &str) -> Self {
        ApiError::new(ErrorCode::MissingField, field)
    }

    pub fn syntax(detail: impl fmt::Display) -> Self {
        ApiError::new(ErrorCode::SyntaxError, detail.to_string())
    }

    pub fn unknown_command(what: &str) -> Self {
        ApiError::new(ErrorCode::UnknownCommand, what)
    }

    pub fn session_not_found(id: &str) -> Self {
        ApiError::new(ErrorCode::SessionNotFound, id)
    }

    pub fn room_not_found(id: &str) -> Self {
        ApiError::new(ErrorCode::RoomNotFound, id)
    }

    /// The wire text of `error`: `name` or `name: detail`.
    pub fn error_text(&self) -> String {
        if self.message.is_empty() {
            self.code.name().to_owned()
        } else {
            format!("{}: {}", self.code.name(), self.message)
        }
    }

    /// Reads back what [`ApiError::to_data`] wrote (a reply carried between cluster nodes);
    /// an unknown code is an `internal_error`.
    pub fn from_data(data: &Value) -> Self {
        let code = data.get("code").and_then(Value::as_u64).unwrap_or(0);
        let text = data.get("error").and_then(Value::as_str).unwrap_or("");
        let Some(code) = ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| u64::from(c.code()) == code)
        else {
            return ApiError::new(ErrorCode::InternalError, text);
        };
        let message = text
            .strip_prefix(code.name())
            .map(|rest| rest.strip_prefix(": ").unwrap_or(rest))
            .unwrap_or(text);
        ApiError::new(code, message)
    }

    /// The `data` of an error reply: `{code, error}`.
    pub fn to_data(&self) -> Value {
        json!({ "code": self.code.code(), "error": self.error_text() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_named_by_the_contract_have_nkmedia_numbers() {
        assert_eq!(ErrorCode::InvalidParameters.code(), 100041);
        assert_eq!(ErrorCode::MissingField.code(), 100045);
        assert_eq!(ErrorCode::UnknownCommand.code(), 100042);
        assert_eq!(ErrorCode::SyntaxError.code(), 100044);
        assert_eq!(ErrorCode::SessionNotFound.code(), 100062);
        assert_eq!(ErrorCode::Unauthorized.code(), 100030);
        assert_eq!(ErrorCode::NotAuthenticated.code(), 100031);
        assert_eq!(ErrorCode::NoMediaserver.code(), 300001);
        assert_eq!(ErrorCode::OfferNotSet.code(), 300010);
        assert_eq!(ErrorCode::AnswerAlreadySet.code(), 300013);
        assert_eq!(ErrorCode::MissingSdp.code(), 300015);
        assert_eq!(ErrorCode::RoomNotFound.code(), 304001);
    }

    #[test]
    fn codes_and_names_are_unique() {
        let codes: HashSet<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn stop_reasons_have_codes() {
        for (code, name) in [
            (ErrorCode::UserStop, "user_stop"),
            (ErrorCode::PeerStopped, "peer_stopped"),
            (ErrorCode::PublisherStop, "publisher_stop"),
            (ErrorCode::SessionTimeout, "session_timeout"),
            (ErrorCode::RoomDestroyed, "room_destroyed"),
            (ErrorCode::ProcessDown, "process_down"),
            (ErrorCode::RegisteredDown, "registered_down"),
        ] {
            assert_eq!(code.name(), name);
        }
    }

    #[test]
    fn error_data_reads_back() {
        for e in [
            ApiError::missing_field("type"),
            ApiError::plain(ErrorCode::ProcessDown),
            ApiError::new(ErrorCode::Timeout, "node n2: no reply in 2 s"),
        ] {
            assert_eq!(ApiError::from_data(&e.to_data()), e);
        }
    }

    #[test]
    fn error_data_has_code_and_text() {
        let e = ApiError::missing_field("type");
        assert_eq!(
            e.to_data(),
            json!({"code": 100045, "error": "missing_field: type"})
        );
        let e = ApiError::plain(ErrorCode::NotAuthenticated);
        assert_eq!(
            e.to_data(),
            json!({"code": 100031, "error": "not_authenticated"})
        );
    }
}
