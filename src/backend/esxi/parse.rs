//! What ESXi's `vim-cmd` and `vmdumper` print, read into values. Pure: text in, values out.
//!
//! `vim-cmd` reports most failures on stdout with exit status 0, as
//! `(vim.fault.NAME) { ... msg = "..." }`, so every reader looks at the text first.

use std::collections::HashMap;

use crate::backend::PowerState;

/// A `vim.fault.*` (or `vmodl.fault.*`) report: its type and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub name: String,
    pub msg: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.msg.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}: {}", self.name, self.msg)
        }
    }
}

impl Fault {
    /// The object named does not exist (any more), e.g. a stale vmid.
    pub fn is_not_found(&self) -> bool {
        self.name.ends_with(".NotFound") || self.name.ends_with(".ManagedObjectNotFound")
    }
}

/// The first fault report in `text`, if any.
pub fn fault(text: &str) -> Option<Fault> {
    let start = text
        .find("(vim.fault.")
        .or_else(|| text.find("(vmodl.fault."))?;
    let rest = &text[start + 1..];
    let name = rest[..rest.find(')')?].to_string();
    let msg = rest
        .lines()
        .find_map(|l| l.trim().strip_prefix("msg = \""))
        .map(|m| m.strip_suffix('"').unwrap_or(m).replace("\\\"", "\""))
        .unwrap_or_default();
    Some(Fault { name, msg })
}

/// VM names to vmids from `vim-cmd vmsvc/getallvms`. Names may hold spaces and annotations
/// may run over several lines, so a VM line is recognised by its vmid and its
/// `[datastore] path.vmx` field, and the name is what lies between them.
pub fn all_vms(text: &str) -> HashMap<String, Vec<u32>> {
    let mut vms: HashMap<String, Vec<u32>> = HashMap::new();
    for line in text.lines() {
        if let Some((vmid, name)) = vm_line(line) {
            vms.entry(name.to_string()).or_default().push(vmid);
        }
    }
    vms
}

fn vm_line(line: &str) -> Option<(u32, &str)> {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits > 9 {
        return None;
    }
    let vmid: u32 = line[..digits].parse().ok()?;
    let rest = &line[digits..];
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    // The file field: ` [datastore] dir/name.vmx`; the first one that fits ends the name.
    let mut from = 0;
    while let Some(i) = rest[from..].find(" [").map(|i| i + from) {
        let file = &rest[i + 1..];
        // The path starts right after `] ` (column padding never does).
        let fits = file.find("] ").is_some_and(|close| {
            !file[close + 2..].starts_with([' ', '\t'])
                && file[close..].find(".vmx").is_some_and(|v| {
                    file[close + v + 4..].starts_with([' ', '\t'])
                        || file[close + v + 4..].is_empty()
                })
        });
        if fits {
            let name = rest[..i].trim();
            return (!name.is_empty()).then_some((vmid, name));
        }
        from = i + 2;
    }
    None
}

/// The power state from `vim-cmd vmsvc/power.getstate`. A suspended VM runs nothing, so it
/// counts as off.
pub fn power_state(text: &str) -> Result<PowerState, String> {
    if let Some(f) = fault(text) {
        return Err(f.to_string());
    }
    for line in text.lines().map(str::trim) {
        match line {
            "Powered on" => return Ok(PowerState::On),
            "Powered off" | "Suspended" => return Ok(PowerState::Off),
            _ => {}
        }
    }
    Err(format!(
        "unexpected power.getstate output: {}",
        excerpt(text)
    ))
}

/// The world id of the running VM whose display name is exactly `name`, from `vmdumper -l`
/// (one tab-separated line per running VM: `wid=... pid=... cfgFile="..." ...
/// displayName="NAME" vmxCartelID=...`). `Ok(None)` when no running VM has that name.
pub fn world_id(text: &str, name: &str) -> Result<Option<u64>, String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut wid = None;
        let mut display = None;
        for field in line.split('\t') {
            let Some((k, v)) = field.trim().split_once('=') else {
                continue;
            };
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            match k {
                "wid" => wid = v.parse::<u64>().ok(),
                "displayName" => display = Some(v),
                _ => {}
            }
        }
        if let (Some(w), Some(d)) = (wid, display)
            && d == name
        {
            found.push(w);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [w] => Ok(Some(*w)),
        many => Err(format!(
            "{} running VMs are named {name} (worlds {many:?}); rename one",
            many.len()
        )),
    }
}

/// The start of some output, on one line, for an error message.
pub fn excerpt(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.is_empty() {
        return "(nothing)".into();
    }
    let cut: String = one.chars().take(200).collect();
    if cut.len() < one.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &str = "Vmid         Name                         File                            Guest OS       Version   Annotation\n\
1      vmdb01                 [datastore1] vmdb01/vmdb01.vmx          rhel8_64Guest   vmx-19    \n\
2      my vm01 [test]         [datastore1] my vm01/my vm01.vmx        rhel8_64Guest   vmx-19    first line\n\
second line 3 [x] y.vmx\n\
12     vm01                   [datastore 2] vm01/vm01.vmx             rhel8_64Guest   vmx-19    \n";

    #[test]
    fn getallvms_names_with_spaces_and_multiline_annotations() {
        let vms = all_vms(ALL);
        assert_eq!(vms["vmdb01"], vec![1]);
        assert_eq!(vms["my vm01 [test]"], vec![2]);
        assert_eq!(vms["vm01"], vec![12]);
        assert_eq!(vms.len(), 3, "{vms:?}");
    }

    #[test]
    fn power_state_and_faults() {
        assert_eq!(
            power_state("Retrieved runtime info\nPowered on\n"),
            Ok(PowerState::On)
        );
        assert_eq!(
            power_state("Retrieved runtime info\nSuspended\n"),
            Ok(PowerState::Off)
        );
        let out = "(vim.fault.InvalidPowerState) {\n   faultCause = (vmodl.MethodFault) null,\n   msg = \"The attempted operation cannot be performed in the current state (Powered off).\"\n}\n";
        let f = fault(out).unwrap();
        assert_eq!(f.name, "vim.fault.InvalidPowerState");
        assert!(f.msg.starts_with("The attempted operation"), "{f:?}");
        assert!(power_state(out).unwrap_err().contains("InvalidPowerState"));
        assert!(power_state("garbage").is_err());
    }

    #[test]
    fn vmdumper_list_by_exact_display_name() {
        let l = "wid=1001\tpid=-1\tcfgFile=\"/vmfs/volumes/ds1/my vm01/my vm01.vmx\"\tuuid=\"56 4d\"\tdisplayName=\"my vm01\"\tvmxCartelID=1000\n\
wid=2002\tpid=-1\tcfgFile=\"/vmfs/volumes/ds1/vm01/vm01.vmx\"\tuuid=\"56 4e\"\tdisplayName=\"vm01\"\tvmxCartelID=2000\n";
        assert_eq!(world_id(l, "vm01"), Ok(Some(2002)));
        assert_eq!(world_id(l, "my vm01"), Ok(Some(1001)));
        assert_eq!(world_id(l, "vm0"), Ok(None));
    }
}
