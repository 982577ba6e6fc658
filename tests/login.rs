//! With an API secret configured, nothing works before a successful login.

use serde_json::json;
use sluice_dataplane::api::IoMode;
use sluice_tests::*;

#[test]
fn secret_requires_login() {
    let server =
        Server::start_with(IoMode::Mmsg, |c| c.api_secret = Some("s3cret".into())).expect("server");
    let mut c = server.client();
    let err = c.session("get_list", json!({})).unwrap_err();
    assert!(err.error.starts_with("not_authenticated"), "{err:?}");
    let err = c
        .request(
            "core",
            "user",
            "login",
            json!({"user": "admin", "password": "wrong"}),
        )
        .unwrap_err();
    assert!(
        err.code == 100030 || err.error.contains("password"),
        "{err:?}"
    );
    let ok = c
        .request(
            "core",
            "user",
            "login",
            json!({"user": "admin", "password": "s3cret"}),
        )
        .expect("login");
    assert!(ok["session_id"].is_string(), "{ok}");
    c.session("get_list", json!({}))
        .expect("served after login");
}

#[test]
fn no_secret_needs_no_login() {
    let server = Server::start(IoMode::Mmsg).expect("server");
    let mut c = server.client();
    c.session("get_list", json!({}))
        .expect("served without login");
}
