//! `netif-floor` runs both modes and prints a rate for each round and a summary; bad
//! arguments are refused by name.

use std::process::Command;

fn floor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netif-floor"))
        .args(args)
        .output()
        .expect("netif-floor starts")
}

/// The rate after `label` in `line` ("... data-ring 12.34 M/s ...").
fn rate_after(line: &str, label: &str) -> f64 {
    let rest = &line[line.find(label).expect(label) + label.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn both_modes_move_records_and_are_summarised() {
    let out = floor(&["--seconds", "0.1", "--rounds", "2", "--burst", "16"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let rounds: Vec<&str> = text.lines().filter(|l| l.starts_with("round ")).collect();
    assert_eq!(rounds.len(), 2, "{text}");
    for l in rounds {
        assert!(rate_after(l, "data-ring ") > 0.0, "{l}");
        assert!(rate_after(l, "netif ") > 0.0, "{l}");
    }
    for name in [
        "data-ring (M/s): median",
        "netif (M/s): median",
        "netif / data-ring: median",
    ] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    assert!(
        text.contains("over 2 rounds, 64 B records, bursts of 16"),
        "{text}"
    );
}

#[test]
fn bad_arguments_are_named() {
    for (args, named) in [
        (&["--seconds", "0"][..], "--seconds"),
        (&["--burst", "0"][..], "--burst"),
        (&["--size", "0"][..], "--size"),
    ] {
        let out = floor(args);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
}
