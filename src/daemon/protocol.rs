//! The control-socket protocol, version 1: one JSON object per line each way.
//!
//! Request: `{"v": 1, "op": "...", ...}`; response: `{"v": 1, "ok": true, ...}` or
//! `{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}`. Operations and
//! their fields are documented in README.md ("Control socket").

use serde::Deserialize;
use serde_json::{Value, json};

use crate::pipeline::Simulation;

pub const VERSION: u64 = 1;
/// Longest request line accepted: a spec file is at most 8 MiB
/// ([`crate::spec::yaml::MAX_FILE_BYTES`]) and a valid one escapes to at most twice that
/// as a JSON string (YAML allows no control character but tab, CR and LF, each escaped
/// in two bytes; other characters are sent as they are, not as `\uXXXX`), plus 1 MiB for
/// the rest of the request: 17 MiB.
pub const MAX_LINE: usize = 2 * crate::spec::yaml::MAX_FILE_BYTES + 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Daemon status: start source, last reload, counts.
    Status { v: u64 },
    /// The live spec (secrets masked) and the live facts.
    Get { v: u64 },
    /// The plan and predicted summary for a spec text, touching nothing.
    Plan { v: u64, spec: String },
    /// Apply a spec text as a reload; `dryRun` is `plan`.
    Apply {
        v: u64,
        spec: String,
        #[serde(default, rename = "dryRun")]
        dry_run: bool,
    },
    /// Set a monitor or reset state in the pipeline (only with `--test-hooks`).
    Simulate { v: u64, simulation: Simulation },
    /// Every HA monitor system of the live spec with what the reset path knows of it;
    /// `name` keeps one system (or the guests of one ESXi host).
    Hamonitor {
        v: u64,
        #[serde(default)]
        name: Option<String>,
    },
    /// An operator's test reset of a system (`haconn server reset`).
    ServerReset {
        v: u64,
        system: String,
        subsystem: u32,
    },
    /// A PDU-cut test of a server's outlets (`mode` given) or the restore of its PDU power
    /// (no `mode`). Answered with progress lines `{"v": 1, "progress": "..."}` as the
    /// outlets switch, then the response.
    ServerIpdu {
        v: u64,
        server: String,
        #[serde(default)]
        pdu: Option<std::net::IpAddr>,
        #[serde(default)]
        mode: Option<crate::pipeline::pdutest::Mode>,
        #[serde(default, rename = "offTime")]
        off_time: Option<u64>,
        #[serde(default, rename = "waitTime")]
        wait_time: Option<u64>,
        #[serde(default)]
        force: bool,
    },
    /// The PDU settings of every server and management server.
    IpduSetting { v: u64 },
    /// The PDU-cut test of the `active` or `standby` management server; streams progress
    /// like `serverIpdu`.
    MserverIpdu {
        v: u64,
        role: String,
        mode: crate::pipeline::pdutest::Mode,
        #[serde(default, rename = "offTime")]
        off_time: Option<u64>,
        #[serde(default, rename = "waitTime")]
        wait_time: Option<u64>,
    },
}

/// Parses one request line; `Err` is the error response to send.
pub fn parse(line: &[u8]) -> Result<Request, Value> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| error("bad-request", &format!("not a JSON object: {e}")))?;
    match value.get("v").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(error(
                "version",
                &format!("protocol version {v} is not supported; this daemon speaks {VERSION}"),
            ));
        }
        None => return Err(error("bad-request", "missing protocol version `v`")),
    }
    serde_json::from_value(value).map_err(|e| error("bad-request", &e.to_string()))
}

pub fn error(code: &str, message: &str) -> Value {
    json!({"v": VERSION, "ok": false, "error": {"code": code, "message": message}})
}

pub fn ok(mut fields: Value) -> Value {
    fields["v"] = VERSION.into();
    fields["ok"] = true.into();
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest spec file, made of the characters JSON escapes (the only ones a valid
    /// spec can hold: tab, CR, LF, quote, backslash), fits in one request line, and the
    /// cap is no larger than that needs.
    #[test]
    fn the_largest_spec_fits_the_line_cap() {
        let max = crate::spec::yaml::MAX_FILE_BYTES;
        let spec: String = "\"\\\n\t\r".chars().cycle().take(max).collect();
        let line =
            serde_json::to_vec(&json!({"v": 1, "op": "apply", "spec": spec, "dryRun": true}))
                .unwrap();
        assert!(line.len() <= MAX_LINE, "{} > {MAX_LINE}", line.len());
        assert!(MAX_LINE <= line.len() + 1024 * 1024 + 64);
    }

    #[test]
    fn parses_and_refuses() {
        assert!(matches!(
            parse(br#"{"v":1,"op":"status"}"#),
            Ok(Request::Status { .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"apply","spec":"x","dryRun":true}"#),
            Ok(Request::Apply { dry_run: true, .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"hamonitor","name":"node01"}"#),
            Ok(Request::Hamonitor { name: Some(n), .. }) if n == "node01"
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"hamonitor"}"#),
            Ok(Request::Hamonitor { name: None, .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"serverReset","system":"node02","subsystem":2}"#),
            Ok(Request::ServerReset { subsystem: 2, .. })
        ));
        assert_eq!(
            parse(br#"{"v":1,"op":"serverReset","system":"node02"}"#).unwrap_err()["error"]["code"],
            "bad-request"
        );
        assert_eq!(
            parse(br#"{"v":2,"op":"status"}"#).unwrap_err()["error"]["code"],
            "version"
        );
        assert_eq!(
            parse(b"garbage").unwrap_err()["error"]["code"],
            "bad-request"
        );
        assert_eq!(
            parse(br#"{"v":1,"op":"explode"}"#).unwrap_err()["error"]["code"],
            "bad-request"
        );
        assert_eq!(
            parse(br#"{"op":"status"}"#).unwrap_err()["error"]["code"],
            "bad-request"
        );
    }
}
