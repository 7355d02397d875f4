//! Enum names derived once with strum: each one is the name serde writes in JSON, so the
//! text shown to users, the wire and the CLI agree without a hand-kept table.

use dvm::{LimitKind, OutputOverflow, Status};
use strum::VariantArray;

fn serde_name(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value).unwrap() {
        serde_json::Value::String(name) => name,
        other => panic!("not a string: {other}"),
    }
}

#[test]
fn limit_kind_and_status_names_are_their_json_names() {
    let kinds: Vec<&str> = LimitKind::VARIANTS.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "deadline",
            "fuel",
            "memory",
            "table",
            "output",
            "cancelled",
            "disk",
            "files",
            "tool_calls"
        ]
    );
    for kind in LimitKind::VARIANTS {
        assert_eq!(kind.as_str(), serde_name(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    let statuses: Vec<&str> = Status::VARIANTS.iter().map(|s| s.as_str()).collect();
    assert_eq!(statuses, ["ok", "error", "limit", "crashed"]);
    for status in Status::VARIANTS {
        assert_eq!(status.as_str(), serde_name(status));
    }
}

#[test]
fn overflow_modes_parse_from_their_json_names_only() {
    for mode in OutputOverflow::VARIANTS {
        let name = serde_name(mode);
        assert_eq!(dvm::profile::parse_overflow(&name), Ok(*mode));
        let name: &'static str = mode.into();
        assert_eq!(name, serde_name(mode));
    }
    for wrong in ["Stop", "TRUNCATE", "", "stop ", "cut"] {
        let error = dvm::profile::parse_overflow(wrong).unwrap_err();
        assert!(
            error.contains(&format!("`{wrong}`")) && error.contains("`truncate` or `stop`"),
            "{error}"
        );
    }
}
