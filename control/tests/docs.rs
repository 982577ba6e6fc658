//! docs/api.md cannot drift from the code: every command the request layer accepts and every
//! setting the command line accepts is named there. Both lists come from the code itself
//! (`request::COMMANDS`, which the parser consults, and clap's view of `Cli`).

use clap::CommandFactory;
use sluice_control::cli::Cli;
use sluice_control::request::COMMANDS;

fn api_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Each command has a heading of its own: `` ### `media/session/create` ``.
#[test]
fn every_command_has_a_section() {
    let doc = api_md();
    let headings: Vec<&str> = doc.lines().filter(|l| l.starts_with('#')).collect();
    let missing: Vec<String> = COMMANDS
        .iter()
        .map(|(class, subclass, cmd)| format!("`{class}/{subclass}/{cmd}`"))
        .filter(|name| !headings.iter().any(|h| h.contains(name.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md has no heading for {missing:?}"
    );
}

/// Each flag, its environment variable and its TOML key appear in backticks.
#[test]
fn every_setting_is_documented() {
    let doc = api_md();
    let mut missing = Vec::new();
    let cli = Cli::command();
    for arg in cli.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        let mut names = vec![format!("`--{long}`")];
        if let Some(env) = arg.get_env() {
            names.push(format!("`{}`", env.to_string_lossy()));
        }
        // The config file names the others; it is not a key of itself.
        if long != "config" && long != "help" && long != "version" {
            names.push(format!("`{}`", long.replace('-', "_")));
        }
        missing.extend(names.into_iter().filter(|n| !doc.contains(n.as_str())));
    }
    assert!(
        missing.is_empty(),
        "docs/api.md does not mention {missing:?}"
    );
}

/// The enumeration itself works: a test that checks nothing would pass forever.
#[test]
fn the_lists_are_not_empty() {
    assert!(COMMANDS.contains(&("media", "session", "create")));
    let cli = Cli::command();
    assert!(cli.get_arguments().any(|a| a.get_long() == Some("api")));
}
