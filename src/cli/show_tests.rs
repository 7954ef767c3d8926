//! Golden files of the `show` text views (`tests/golden/show/`), rendered from the views
//! the daemon builds of `tests/golden/show/spec.yaml` (and, for `hamonitor`, from rows
//! of every state). `UPDATE_EXPECT=1 cargo test --lib show` rewrites them; read the diff.

use std::path::PathBuf;

use super::*;
use crate::daemon::protocol::{IpduSettingReply, MonitorRow, SettingsView};
use crate::spec::model::Spec;
use crate::spec::{CheckOptions, check_bytes};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/show")
}

fn spec() -> Spec {
    let text = std::fs::read(golden_dir().join("spec.yaml")).unwrap();
    let c = check_bytes(&text, CheckOptions::default());
    c.spec
        .unwrap_or_else(|| panic!("golden spec invalid: {:?}", c.diagnostics))
}

/// Compares `actual` with the golden file `name`, or rewrites it with `UPDATE_EXPECT=1`.
fn expect(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); UPDATE_EXPECT=1 creates it",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{} differs (UPDATE_EXPECT=1 rewrites it)\n--- want\n{want}\n--- got\n{actual}",
        path.display()
    );
}

#[test]
fn settings_in_the_manuals_sections() {
    let text = render_settings(&SettingsView::of(&spec()));
    expect("settings.txt", &text);
    for section in [
        "<mode>",
        "<resetpath>",
        "<physical server>",
        "<virtual server>",
        "<hispeed failover>",
    ] {
        assert!(
            text.contains(&format!("\n{section}\n")),
            "{section}\n{text}"
        );
    }
    assert!(text.contains(" addr:192.168.10.100    mask:255.255.255.0    port number:30000\n"));
}

#[test]
fn hispeed_off_and_a_single_server_as_the_manual_shows_unset_values() {
    let mut v = SettingsView::of(&spec());
    v.hispeed = None;
    v.mode = "single".into();
    let text = render_settings(&v);
    assert!(
        text.contains(" status   :off\n resettime: ----\n"),
        "{text}"
    );
    assert!(text.contains("<mode>\n 1:single server"), "{text}");
    assert!(text.contains("<virtual server guest>"), "{text}");
    for s in &mut v.servers {
        s.esxi = None;
    }
    let text = render_settings(&v);
    assert!(!text.contains("<virtual server guest>"), "{text}");
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq(["2", "esx01", "----", "----", "----", "Disable"])),
        "{text}"
    );
}

#[test]
fn mserver_settings_in_the_manuals_sections() {
    expect(
        "mserver-settings.txt",
        &render_mserver_settings(&SettingsView::of(&spec())),
    );
}

#[test]
fn ipdu_setting_masks_the_community_and_lists_the_pdus_with_models() {
    let text = render_ipdu_settings(&IpduSettingReply::of(&spec()));
    expect("ipdu-setting.txt", &text);
    assert!(!text.contains("s3cretCommunity"), "{text}");
    assert!(text.contains("SNMP Community : ********\n"), "{text}");
    let json = serde_json::to_string(&IpduSettingReply::of(&spec())).unwrap();
    assert!(!json.contains("s3cretCommunity"), "{json}");
}

#[test]
fn mask_column() {
    assert_eq!(mask("10.0.0.1".parse().unwrap(), 8), "255.0.0.0");
    assert_eq!(mask("10.0.0.1".parse().unwrap(), 32), "255.255.255.255");
    assert_eq!(mask("10.0.0.1".parse().unwrap(), 0), "0.0.0.0");
    assert_eq!(mask("fd00::1".parse().unwrap(), 64), "/64");
}

#[test]
fn hamonitor_shows_the_manuals_states_and_why_a_system_cannot_be_reset() {
    let row = |system: &str, state: &str, detail: Option<&str>, reason: Option<&str>| {
        let registered = detail.is_some();
        MonitorRow {
            warning: None,
            system: system.into(),
            server: Some(system.into()),
            kind: "P".into(),
            subsystem: registered.then_some(7),
            state: state.into(),
            detail: detail.map(Into::into),
            reason: reason.map(Into::into),
            ip: registered.then(|| "192.168.0.101".parse().unwrap()),
            port: registered.then_some(6001),
            pair: None,
            last_check_ms_ago: registered.then_some(2500),
        }
    };
    let rows = [
        row("node01", "normal", Some("normal"), None),
        row("node02", "dump", Some("reboot"), None),
        row(
            "node03",
            "error",
            Some("failed"),
            Some("BMC: no answer in 3 s"),
        ),
        row("node04", "----", None, None),
        MonitorRow {
            warning: Some("predictiveFailure: IPMI PET sensor type 0x0d #3 event type 0x6f offset 2 severity Critical seq 7".into()),
            ..row("node05", "warning", Some("normal"), None)
        },
    ];
    expect("hamonitor.txt", &render_monitors(&rows));
}

/// README.md shows the setting displays as the golden files hold them.
#[test]
fn readme_shows_the_golden_setting_displays() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for name in ["settings.txt", "mserver-settings.txt", "ipdu-setting.txt"] {
        let golden = std::fs::read_to_string(golden_dir().join(name)).unwrap();
        assert!(
            readme.contains(&format!("```\n{golden}```\n")),
            "README.md does not show {name} as tests/golden/show/{name} holds it"
        );
    }
}

/// `show version` warns, in its text and its JSON, when the daemon is another build: a
/// version, a protocol or a commit that differs; a profile or compiler alone does not.
#[test]
fn show_version_warns_when_client_and_daemon_differ() {
    let client = VersionReply::this_build();
    let same = Versions::of(client.clone(), Some(client.clone()));
    assert!(!same.differ && same.warning.is_none());
    assert!(!same.render().contains("WARNING"), "{}", same.render());

    let mut other = client.clone();
    other.build.profile = Some("other".into());
    other.build.rustc = None;
    assert!(!Versions::of(client.clone(), Some(other.clone())).differ);

    other.version = "9.9.9".into();
    other.build.commit = Some("0123456789ab".into());
    other.protocols.control = 2;
    let v = Versions::of(client.clone(), Some(other));
    assert!(v.differ);
    let w = v.warning.clone().expect("a warning");
    for part in [
        "version ",
        "vs 9.9.9",
        "protocols control 1",
        "commit ",
        "0123456789ab",
    ] {
        assert!(w.contains(part), "{part} not in {w}");
    }
    let text = v.render();
    assert!(text.contains(&format!("WARNING: {w}")), "{text}");
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["differ"], true);
    assert_eq!(json["warning"], w.as_str());
    // With the daemon unknown, nothing to compare.
    assert!(!Versions::of(client, None).differ);
}
