//! The packages `scripts/package` builds, made here from this build's (debug) binary,
//! stripped, so that no release build is needed: the .rpm's files and scriptlets
//! (`rpm -qp`; an rpm cannot be installed on Debian), the .deb through lintian, and the
//! .deb installed, used, removed and purged with dpkg on this machine, as root, checking
//! that it leaves nothing behind and never enables or starts the service. Also the packaged
//! example spec, and the packaged unit against `contrib/systemd/haconn.service`.
//!
//! The packages are built once per test run (the first test to need them waits for
//! `scripts/package`, the others for it), into cargo's test scratch directory.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::harness::repo;
use crate::support::pacemaker as pcmk;
use crate::support::run::{Run, execute};

const UNIT: &str = "/usr/lib/systemd/system/haconn.service";
const CONTRIB_UNIT: &str = "contrib/systemd/haconn.service";
const EXAMPLE: &str = "/etc/haconn/cluster.yaml.example";
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/haconn.service";
/// Files every package holds, besides one man page per command.
const PACKAGED: &[&str] = &[
    "/usr/bin/haconn",
    "/usr/sbin/fence_haconn",
    UNIT,
    EXAMPLE,
    "/usr/share/man/man8/fence_haconn.8.gz",
    "/usr/share/bash-completion/completions/haconn",
    "/usr/share/fish/vendor_completions.d/haconn.fish",
    "/usr/share/doc/haconn/README.md",
    "/usr/share/doc/haconn/systemd.md",
    "/usr/share/doc/haconn/grafana-dashboard.json",
];

/// Runs `program` with `args` to its end.
fn run(program: &str, args: &[&str]) -> Run {
    let mut r = execute(
        Command::new(program),
        args.iter().map(|a| a.to_string()).collect(),
        Vec::new(),
    );
    r.args.insert(0, format!("({program})"));
    r
}

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

/// The .deb and the .rpm of this build, made by `scripts/package` on first use.
fn packages() -> &'static Packages {
    static BUILT: OnceLock<Packages> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packages");
        let _ = std::fs::remove_dir_all(&out);
        let script = repo().join("scripts/package");
        let r = run(
            script.to_str().expect("utf-8 path"),
            &[
                "--binary",
                env!("CARGO_BIN_EXE_haconn"),
                "--fast",
                "--out",
                out.to_str().expect("utf-8 path"),
            ],
        );
        r.code(0);
        let find = |ext: &str| -> PathBuf {
            let found: Vec<PathBuf> = std::fs::read_dir(&out)
                .expect("the output directory")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect();
            assert_eq!(
                found.len(),
                1,
                "one .{ext} expected in {out:?}: {found:?}\n{r}"
            );
            found.into_iter().next().expect("one")
        };
        Packages {
            deb: find("deb"),
            rpm: find("rpm"),
        }
    })
}

/// The man pages `haconn man` writes, as packaged paths (`…/man1/haconn-show.1.gz`).
fn man_pages() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    run(env!("CARGO_BIN_EXE_haconn"), &["man", d]).code(0);
    let pages: BTreeSet<String> = std::fs::read_dir(dir.path())
        .expect("man pages")
        .map(|e| {
            let name = e.expect("entry").file_name();
            format!("/usr/share/man/man1/{}.gz", name.to_string_lossy())
        })
        .collect();
    assert!(
        pages.contains("/usr/share/man/man1/haconn-daemon.1.gz"),
        "{pages:?}"
    );
    pages
}

/// Asserts that `listing` holds every packaged file and every man page.
fn assert_lists_every_file(listing: &BTreeSet<String>, extra: &[&str], what: &str) {
    let expected = PACKAGED
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .chain(man_pages());
    let missing: Vec<String> = expected.filter(|p| !listing.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "{what} lacks {missing:?}; it has {listing:#?}"
    );
}

/// What a maintainer script must never do: enable or start the service (there may be no
/// spec yet), or restart it on an upgrade (in a pair, one server at a time, by hand).
fn assert_never_starts(script: &str, what: &str) {
    const TOOLS: [&str; 3] = ["systemctl", "deb-systemd-invoke", "deb-systemd-helper"];
    const VERBS: [&str; 6] = [
        "enable",
        "start",
        "restart",
        "try-restart",
        "reload-or-restart",
        "--now",
    ];
    for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
        // What the script runs, not what it tells the operator to run.
        let unquoted: String = line.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        let words: Vec<&str> = unquoted.split_whitespace().collect();
        if words.iter().any(|w| TOOLS.contains(w))
            && let Some(verb) = words.iter().find(|w| VERBS.contains(w))
        {
            panic!("{what} would `{verb}` the service: {line}");
        }
    }
}

#[test]
fn example_spec_is_valid_and_keeps_its_secrets_in_the_secrets_dir() {
    let example = repo().join("contrib/packaging/cluster.yaml.example");
    let text = std::fs::read_to_string(&example).expect("the example spec");
    let refs: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once("{file: ").map(|(_, r)| r))
        .map(|r| r.split('}').next().expect("a closing brace"))
        .collect();
    assert!(refs.len() >= 5, "{refs:?}");
    for r in &refs {
        assert!(
            r.starts_with("/etc/haconn/secrets/"),
            "{r} is outside the secrets dir"
        );
    }
    let e = example.to_str().expect("utf-8 path");
    let haconn = env!("CARGO_BIN_EXE_haconn");
    run(haconn, &["validate", "--deny-inline-secrets", e])
        .code(0)
        .stdout_has("valid (0 errors, 0 warnings)");

    // With every secret file written (in a scratch directory standing for
    // /etc/haconn/secrets), it resolves too.
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    let moved = text.replace("/etc/haconn/secrets/", &format!("{}/", secrets.display()));
    for r in &refs {
        let value = match *r {
            "/etc/haconn/secrets/reset-path.key" => "c2VjcmV0LWtleS1mb3ItdGhlLXJlc2V0LXBhdGgK",
            "/etc/haconn/secrets/snmp-community" => "fencing2026",
            _ => "Bmc-Passw0rd",
        };
        let file = secrets.join(r.rsplit('/').next().expect("a file name"));
        std::fs::write(file, format!("{value}\n")).expect("write a secret");
    }
    let spec = dir.path().join("cluster.yaml");
    std::fs::write(&spec, moved).expect("write the spec");
    run(
        haconn,
        &[
            "validate",
            "--resolve-secrets",
            "--deny-inline-secrets",
            spec.to_str().expect("utf-8 path"),
        ],
    )
    .code(0);
}

#[test]
fn rpm_holds_every_file_and_the_scriptlets() {
    pcmk::require("/usr/bin/rpm", "rpm");
    let rpm = packages().rpm.to_str().expect("utf-8 path");
    let version = env!("CARGO_PKG_VERSION");
    run(
        "rpm",
        &["-qp", "--queryformat", "%{NAME} %{VERSION}-%{RELEASE}", rpm],
    )
    .code(0)
    .stdout_has(&format!("haconn {version}-1"));

    let list = run("rpm", &["-qlp", rpm]);
    list.code(0);
    let listing: BTreeSet<String> = list.stdout.lines().map(str::to_string).collect();
    assert_lists_every_file(
        &listing,
        &["/usr/share/zsh/site-functions/_haconn"],
        "the rpm",
    );
    run("rpm", &["-qp", "--configfiles", rpm])
        .code(0)
        .stdout_has(EXAMPLE);

    let scripts = run("rpm", &["-qp", "--scripts", rpm]);
    scripts.code(0);
    let s = &scripts.stdout;
    for needed in [
        "postinstall scriptlet",
        "groupadd --system haconn",
        "mkdir -m 0700 /etc/haconn/secrets",
        "preuninstall scriptlet",
        "systemctl --no-reload disable --now haconn.service",
        "postuninstall scriptlet",
    ] {
        assert!(
            s.contains(needed),
            "the scriptlets lack {needed:?}\n{scripts}"
        );
    }
}

/// Neither package's maintainer scripts enable or start the service: not on install (no
/// spec yet), not on upgrade. (The dpkg test sees it too, but only where no systemd runs.)
#[test]
fn maintainer_scripts_never_enable_or_start_the_service() {
    pcmk::require("/usr/bin/dpkg-deb", "dpkg");
    pcmk::require("/usr/bin/rpm", "rpm");
    let dir = tempfile::tempdir().expect("tempdir");
    let control = dir.path().to_str().expect("utf-8 path");
    run(
        "dpkg-deb",
        &["-e", packages().deb.to_str().expect("utf-8 path"), control],
    )
    .code(0);
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(dir.path().join(script)).expect("a script");
        assert_never_starts(&text, &format!("the .deb's {script}"));
    }
    let scripts = run(
        "rpm",
        &[
            "-qp",
            "--scripts",
            packages().rpm.to_str().expect("utf-8 path"),
        ],
    );
    scripts.code(0);
    let install = scripts
        .stdout
        .split("preuninstall scriptlet")
        .next()
        .expect("the %post part");
    assert!(install.contains("postinstall scriptlet"), "{scripts}");
    assert_never_starts(install, "the rpm's %post");
}

#[test]
fn deb_passes_lintian_with_no_error_or_warning() {
    pcmk::require("/usr/bin/lintian", "lintian");
    let deb = packages().deb.to_str().expect("utf-8 path");
    // Errors make lintian fail; warnings are listed as `W:` lines.
    let r = run("lintian", &["--fail-on", "error,warning", deb]);
    r.code(0);
    let tags: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(tags.is_empty(), "lintian: {tags:?}\n{r}");
}

/// The packaged unit is `contrib/systemd/haconn.service` with the two lines that
/// `scripts/package` changes, changed as it says, and nothing else.
#[test]
fn unit_is_the_contrib_unit_with_the_packaged_binary_and_group() {
    pcmk::require("/usr/bin/dpkg-deb", "dpkg");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8 path");
    run(
        "dpkg-deb",
        &["-x", packages().deb.to_str().expect("utf-8 path"), root],
    )
    .code(0);
    let packaged = std::fs::read_to_string(dir.path().join(&UNIT[1..])).expect("the unit");
    let contrib = std::fs::read_to_string(repo().join(CONTRIB_UNIT)).expect("contrib unit");
    let (p, c): (Vec<&str>, Vec<&str>) = (packaged.lines().collect(), contrib.lines().collect());
    assert_eq!(p.len(), c.len(), "{packaged}");
    let differ: Vec<(&str, &str)> = c
        .iter()
        .zip(&p)
        .filter(|(c, p)| c != p)
        .map(|(c, p)| (*c, *p))
        .collect();
    let exec = c
        .iter()
        .find(|l| l.starts_with("ExecStart=/usr/local/bin/haconn daemon "))
        .expect("the contrib unit's ExecStart");
    let packaged_exec = format!(
        "{} --socket-group haconn",
        exec.replace("/usr/local/bin/haconn", "/usr/bin/haconn")
    );
    assert_eq!(differ.len(), 2, "{differ:#?}");
    assert!(differ[0].0.starts_with("# Install as "), "{differ:#?}");
    assert!(
        differ[0].1.starts_with("# Installed by the haconn package"),
        "{differ:#?}"
    );
    assert_eq!(differ[1], (*exec, packaged_exec.as_str()));
}

/// Why the dpkg test cannot run here, if it cannot.
fn dpkg_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: dpkg -i installs into the system".into());
    }
    if !Path::new("/usr/bin/dpkg").exists() {
        return Some("not a Debian system (no /usr/bin/dpkg)".into());
    }
    None
}

/// `dpkg-query`'s status of haconn ("install ok installed", "deinstall ok config-files"),
/// `None` when dpkg knows nothing of it.
fn dpkg_status() -> Option<String> {
    let r = run("dpkg-query", &["-W", "-f=${Status}", "haconn"]);
    (r.code == Some(0) && !r.stdout.contains("not-installed")).then(|| r.stdout.clone())
}

fn group_exists() -> bool {
    run("getent", &["group", "haconn"]).code == Some(0)
}

/// Puts the machine back as the test found it (checked empty of haconn first), also when
/// the test failed halfway.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let _ = Command::new("dpkg").args(["--purge", "haconn"]).status();
        }
        let _ = std::fs::remove_file(ENABLED_LINK);
        let _ = std::fs::remove_dir_all("/etc/haconn");
        if group_exists() {
            let _ = Command::new("groupdel").arg("haconn").status();
        }
    }
}

/// The processes running the installed binary.
fn installed_daemons() -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| {
            let e = e.ok()?;
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            (exe == Path::new("/usr/bin/haconn")).then(|| e.file_name().to_string_lossy().into())
        })
        .collect()
}

#[test]
fn deb_installs_runs_removes_and_purges_leaving_nothing_behind() {
    if let Some(why) = dpkg_unavailable() {
        eprintln!("SKIPPED deb_installs_runs_removes_and_purges_leaving_nothing_behind: {why}");
        return;
    }
    pcmk::require("/usr/bin/systemd-analyze", "systemd");
    let deb = packages().deb.to_str().expect("utf-8 path");
    // pacemaker's tests put their own /usr/sbin/fence_haconn there meanwhile.
    let _lock = pcmk::take_lock();
    assert_eq!(
        dpkg_status(),
        None,
        "haconn is installed here: the test will not replace it"
    );
    for path in [
        "/etc/haconn",
        "/usr/bin/haconn",
        "/var/lib/haconn",
        ENABLED_LINK,
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} exists (a hand install?): the test installs and purges the package and will not run over it"
        );
    }
    assert!(
        !group_exists(),
        "a haconn group exists: the test's purge would delete it"
    );
    let _cleanup = Cleanup;

    // Install: nothing enabled, nothing started, the operator told what to do.
    let install = run("dpkg", &["-i", deb]);
    install.code(0).stdout_has("the service is not started");
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
    assert!(
        std::fs::symlink_metadata(ENABLED_LINK).is_err(),
        "enabled on install\n{install}"
    );
    assert_eq!(
        installed_daemons(),
        Vec::<String>::new(),
        "started on install"
    );

    let listed = run("dpkg", &["-L", "haconn"]);
    listed.code(0);
    let listing: BTreeSet<String> = listed.stdout.lines().map(str::to_string).collect();
    assert_lists_every_file(
        &listing,
        &["/usr/share/zsh/vendor-completions/_haconn"],
        "dpkg -L haconn",
    );
    for path in &listing {
        assert!(
            std::fs::symlink_metadata(path).is_ok(),
            "{path} is listed but missing"
        );
    }
    assert_eq!(
        std::fs::read_link("/usr/sbin/fence_haconn").expect("a symlink"),
        Path::new("../bin/haconn")
    );
    let secrets = std::fs::metadata("/etc/haconn/secrets").expect("/etc/haconn/secrets");
    assert!(secrets.is_dir());
    assert_eq!(secrets.permissions().mode() & 0o7777, 0o700);
    assert_eq!((secrets.uid(), secrets.gid()), (0, 0));
    assert!(group_exists(), "no haconn group");

    // Use it as an operator would.
    run("/usr/bin/haconn", &["--version"])
        .code(0)
        .stdout_has(&format!("haconn {}", env!("CARGO_PKG_VERSION")));
    run("/usr/bin/haconn", &["validate", EXAMPLE])
        .code(0)
        .stdout_has("valid (0 errors, 0 warnings)");
    run("/usr/sbin/fence_haconn", &["-o", "metadata"])
        .code(0)
        .stdout_has("<resource-agent name=\"fence_haconn\"");
    let verify = run("systemd-analyze", &["verify", UNIT]);
    verify.code(0);
    assert!(!verify.stderr.contains("haconn"), "{verify}");

    // The unit's own command line, pointed at scratch paths: it parses (the haconn group
    // resolves) and stops only for want of a spec.
    let unit = std::fs::read_to_string(UNIT).expect("the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let scratch = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| scratch.path().join(name).display().to_string();
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/bin/haconn");
    let spec = words
        .iter()
        .position(|w| w == "--spec")
        .expect("ExecStart names the spec");
    assert_eq!(words[spec + 1], "/etc/haconn/cluster.yaml");
    words[spec + 1] = at("none.yaml");
    for (flag, value) in [
        ("--state-dir", at("state")),
        ("--log-dir", at("log")),
        ("--control-socket", at("sock")),
    ] {
        words.push(flag.into());
        words.push(value);
    }
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let daemon = run(&words[0], &args);
    daemon.code(1).stderr_has("refusing to start");

    // The operator enables it (offline when no systemd runs, as here).
    run("systemctl", &["enable", "haconn.service"]).code(0);
    assert!(std::fs::symlink_metadata(ENABLED_LINK).is_ok());

    // Remove: the files go, the configuration stays (conffiles, secrets dir, group,
    // enablement).
    run("dpkg", &["-r", "haconn"]).code(0);
    assert_eq!(dpkg_status().as_deref(), Some("deinstall ok config-files"));
    for path in &listing {
        let kept = path == EXAMPLE || Path::new(path).is_dir();
        if !kept {
            assert!(
                std::fs::symlink_metadata(path).is_err(),
                "{path} is still there after dpkg -r"
            );
        }
    }
    assert!(
        Path::new(EXAMPLE).exists(),
        "the conffile went with dpkg -r"
    );
    assert!(Path::new("/etc/haconn/secrets").is_dir());
    assert!(group_exists());
    assert!(std::fs::symlink_metadata(ENABLED_LINK).is_ok());

    // Purge: nothing left.
    run("dpkg", &["--purge", "haconn"]).code(0);
    assert_eq!(dpkg_status(), None);
    for path in listing.iter().map(String::as_str).chain([
        "/etc/haconn",
        "/usr/share/doc/haconn",
        "/var/lib/haconn",
        "/var/log/haconn",
        ENABLED_LINK,
    ]) {
        let shared = Path::new(path).is_dir() && !path.contains("haconn");
        if !shared {
            assert!(
                std::fs::symlink_metadata(path).is_err(),
                "{path} is still there after dpkg --purge"
            );
        }
    }
    assert!(
        !group_exists(),
        "the haconn group is still there after dpkg --purge"
    );
}
