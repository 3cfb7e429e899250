//! The systemd unit we ship, `libraflux/systemd/libraflux.service`, read for what decides who the
//! daemon runs as, with which capabilities, where its files live and how it is started, so that
//! the VM tests start the daemon as the unit does instead of restating the unit
//! ([`Credentials::of_unit`](crate::creds::Credentials::of_unit)).
//!
//! Enough of systemd's syntax for this file (systemd.syntax(7), systemd.exec(5)): sections,
//! comments (`#`, `;`), `Key=value`, lines continued with a trailing `\`, whitespace-separated
//! lists that accumulate over repeated keys, and an empty assignment that resets. Whatever this
//! module does not model and that would change who the daemon runs as (`User=`,
//! `SupplementaryGroups=`, an unknown capability, quoting or specifiers in a command line) is a
//! panic that says so, so a change to the unit cannot leave the tests running the daemon otherwise
//! than systemd would. Not reproduced at all: the sandboxing directives (`ProtectSystem=`,
//! `RestrictAddressFamilies=`, ...), which need mount namespaces and seccomp filters.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::creds::CapabilitySet;

/// The unit file, relative to the workspace root.
pub const PATH: &str = "libraflux/systemd/libraflux.service";

/// systemd's range for `DynamicUser=` uids (its build's `DYNAMIC_UID_MIN` and `DYNAMIC_UID_MAX`).
pub const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 61_184..=65_519;

/// systemd's mode for a state or runtime directory when the unit names none.
const DEFAULT_DIRECTORY_MODE: u32 = 0o755;

/// Directives that change the daemon's credentials and that this module does not model.
const NOT_MODELLED: [&str; 5] = ["User", "Group", "SupplementaryGroups", "SecureBits", "PrivateUsers"];

/// A resource limit as `setrlimit(2)` takes it; `u64::MAX` is `RLIM_INFINITY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: u64,
    pub hard: u64,
}

/// The `[Service]` directives the tests reproduce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// The unit's name without `.service`: the name `DynamicUser=` gives the user.
    pub name: String,
    pub dynamic_user: bool,
    pub ambient_capabilities: CapabilitySet,
    /// [`CapabilitySet::ALL`] when the unit leaves the bounding set alone.
    pub capability_bounding_set: CapabilitySet,
    pub no_new_privileges: bool,
    /// Under /var/lib.
    pub state_directory: Vec<String>,
    pub state_directory_mode: u32,
    /// Under /run.
    pub runtime_directory: Vec<String>,
    pub runtime_directory_mode: u32,
    pub limit_memlock: Option<Rlimit>,
    pub umask: Option<u32>,
    /// `ExecStart=` split into the program and its arguments.
    pub exec_start: Vec<String>,
    /// Each `ExecReload=` command, in order.
    pub exec_reload: Vec<Vec<String>>,
    /// Each `ExecStopPost=` command, in order.
    pub exec_stop_post: Vec<Vec<String>>,
}

impl Default for Unit {
    fn default() -> Self {
        Self {
            name: String::new(),
            dynamic_user: false,
            ambient_capabilities: CapabilitySet::EMPTY,
            capability_bounding_set: CapabilitySet::ALL,
            no_new_privileges: false,
            state_directory: Vec::new(),
            state_directory_mode: DEFAULT_DIRECTORY_MODE,
            runtime_directory: Vec::new(),
            runtime_directory_mode: DEFAULT_DIRECTORY_MODE,
            limit_memlock: None,
            umask: None,
            exec_start: Vec::new(),
            exec_reload: Vec::new(),
            exec_stop_post: Vec::new(),
        }
    }
}

impl Unit {
    /// The unit in this workspace.
    pub fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(PATH);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let name = Path::new(PATH).file_stem().and_then(|stem| stem.to_str()).expect("a unit name");
        Self::parse(name, &text)
    }

    /// The unit `name` (without `.service`) from the text of its file.
    pub fn parse(name: &str, text: &str) -> Self {
        let mut unit = Self { name: name.to_owned(), ..Self::default() };
        let mut section = None;
        for (line_number, line) in logical_lines(text) {
            let at = format!("{name}.service:{line_number}");
            if let Some(header) = line.strip_prefix('[') {
                section =
                    Some(header.strip_suffix(']').unwrap_or_else(|| panic!("{at}: {line:?}")).to_owned());
                continue;
            }
            let (key, value) =
                line.split_once('=').unwrap_or_else(|| panic!("{at}: not Key=value: {line:?}"));
            let (key, value) = (key.trim(), value.trim());
            match section.as_deref() {
                Some("Service") => unit.set(key, value, &at),
                Some(_) => {}
                None => panic!("{at}: {key}= before any section"),
            }
        }
        unit
    }

    fn set(&mut self, key: &str, value: &str, at: &str) {
        assert!(
            !NOT_MODELLED.contains(&key),
            "{at}: {key}= changes who the daemon runs as, and tests/src/unit.rs does not model it: teach \
             it (and Credentials::of_unit) what it means"
        );
        match key {
            "DynamicUser" => self.dynamic_user = boolean(value, at),
            "NoNewPrivileges" => self.no_new_privileges = boolean(value, at),
            "AmbientCapabilities" => {
                self.ambient_capabilities =
                    capabilities(self.ambient_capabilities, CapabilitySet::EMPTY, value, at);
            }
            "CapabilityBoundingSet" => {
                self.capability_bounding_set =
                    capabilities(self.capability_bounding_set, CapabilitySet::ALL, value, at);
            }
            "StateDirectory" => list(&mut self.state_directory, value),
            "StateDirectoryMode" => self.state_directory_mode = mode(value, at),
            "RuntimeDirectory" => list(&mut self.runtime_directory, value),
            "RuntimeDirectoryMode" => self.runtime_directory_mode = mode(value, at),
            "LimitMEMLOCK" => self.limit_memlock = Some(rlimit(value, at)),
            "UMask" => self.umask = Some(mode(value, at)),
            "ExecStart" => {
                assert!(
                    self.exec_start.is_empty() || value.is_empty(),
                    "{at}: a second ExecStart= (only Type=oneshot may have several)"
                );
                self.exec_start = command(value, at);
            }
            "ExecReload" if value.is_empty() => self.exec_reload.clear(),
            "ExecReload" => self.exec_reload.push(command(value, at)),
            "ExecStopPost" if value.is_empty() => self.exec_stop_post.clear(),
            "ExecStopPost" => self.exec_stop_post.push(command(value, at)),
            _ => {}
        }
    }

    /// The uid `DynamicUser=` gives the unit's user (its gid is the same number). systemd hashes
    /// the user's name into [`DYNAMIC_UIDS`] and takes another uid of the range if that one is
    /// taken; any uid of the range is one it may give. This one is a hash of the name too (FNV-1a),
    /// so it is the same in every run.
    pub fn dynamic_uid(&self) -> u32 {
        let hash = self
            .name
            .bytes()
            .fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193));
        let span = DYNAMIC_UIDS.end() - DYNAMIC_UIDS.start() + 1;
        DYNAMIC_UIDS.start() + hash % span
    }

    /// `StateDirectory=` under `root` (systemd: /var/lib/NAME), made for `uid` as systemd makes
    /// it at each start of the service (see [`make_service_directory`]).
    pub fn make_state_directory(&self, root: &Path, uid: u32) -> PathBuf {
        let name = only("StateDirectory", &self.state_directory);
        make_service_directory(&root.join("var/lib").join(name), self.state_directory_mode, uid)
    }

    /// `RuntimeDirectory=` under `root` (systemd: /run/NAME), made as systemd makes it.
    pub fn make_runtime_directory(&self, root: &Path, uid: u32) -> PathBuf {
        let name = only("RuntimeDirectory", &self.runtime_directory);
        make_service_directory(&root.join("run").join(name), self.runtime_directory_mode, uid)
    }

    /// /var/lib/NAME: where the service's state directory is on a node.
    pub fn state_directory_on_a_node(&self) -> PathBuf {
        Path::new("/var/lib").join(only("StateDirectory", &self.state_directory))
    }

    /// /run/NAME: where the service's runtime directory is on a node.
    pub fn runtime_directory_on_a_node(&self) -> PathBuf {
        Path::new("/run").join(only("RuntimeDirectory", &self.runtime_directory))
    }
}

/// The one directory of `list`: the tests model one state and one runtime directory.
fn only<'a>(key: &str, list: &'a [String]) -> &'a str {
    match list {
        [one] => one,
        _ => panic!("{key}={list:?}: the tests model exactly one directory"),
    }
}

/// What systemd does for a `StateDirectory=` or `RuntimeDirectory=` when the service starts
/// (`setup_exec_directory`): creates it (parents 0755, root's) if missing, sets the unit's mode,
/// and gives the whole tree to the service's user unless the directory itself is that user's
/// already, in which case it looks no further (root's files inside stay root's). Not reproduced:
/// with `DynamicUser=` the directory really lives in /var/lib/private/NAME (0700, so other users
/// cannot reach a directory whose uid may be reused), and the service sees it at /var/lib/NAME
/// through a mount of its own.
pub fn make_service_directory(path: &Path, mode: u32, uid: u32) -> PathBuf {
    std::fs::create_dir_all(path).unwrap_or_else(|err| panic!("mkdir -p {}: {err}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let owner = std::fs::metadata(path).unwrap();
    if (owner.uid(), owner.gid()) != (uid, uid) {
        chown_tree(path, uid);
    }
    path.to_owned()
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|err| panic!("chown {uid} {}: {err}", path.display()));
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

/// The file's lines with continuations joined (a trailing `\` becomes a space), without blank
/// lines and comments, each with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_none() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        let (number, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(start) => {
                joined.push_str(start);
                joined.push(' ');
                pending = Some((number, joined));
            }
            None => {
                joined.push_str(line);
                lines.push((number, joined));
            }
        }
    }
    lines.extend(pending);
    lines
}

/// systemd's booleans (`parse_boolean`).
fn boolean(value: &str, at: &str) -> bool {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => true,
        "0" | "no" | "n" | "false" | "f" | "off" => false,
        _ => panic!("{at}: {value:?} is not a boolean"),
    }
}

/// A whitespace-separated list added to `list`; empty resets it.
fn list(list: &mut Vec<String>, value: &str) {
    if value.is_empty() {
        list.clear();
    }
    list.extend(value.split_whitespace().map(str::to_owned));
}

/// An octal file mode (`0755`, `755`).
fn mode(value: &str, at: &str) -> u32 {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .unwrap_or_else(|| panic!("{at}: {value:?} is not an octal mode"))
}

/// A capability list as systemd's `config_parse_capability_set` reads one into `set` (whose
/// value before any assignment is `initial`): the first list, or an empty one, replaces the set;
/// later lists are added to it; a list that starts with `~` names what the set leaves out.
fn capabilities(set: CapabilitySet, initial: CapabilitySet, value: &str, at: &str) -> CapabilitySet {
    let (inverted, names) = match value.strip_prefix('~') {
        Some(names) => (true, names),
        None => (false, value),
    };
    let mut named = CapabilitySet::EMPTY;
    for name in names.split_whitespace() {
        let number = CapabilitySet::number(name).unwrap_or_else(|| {
            panic!(
                "{at}: unknown capability {name}: a typo, or one newer than the table in \
                 tests/src/creds.rs (add it there with its number from linux/capability.h)"
            )
        });
        named.insert(number);
    }
    match (named.is_empty() || set == initial, inverted) {
        (true, false) => named,
        (true, true) => named.complement(),
        (false, false) => set.union(named),
        (false, true) => set.without(named),
    }
}

/// `infinity`, a size in bytes with an optional binary suffix (`64K`, `8M`), or `SOFT:HARD`.
fn rlimit(value: &str, at: &str) -> Rlimit {
    let one = |value: &str| -> u64 {
        if value == "infinity" {
            return u64::MAX;
        }
        let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let shift = match &value[digits.len()..] {
            "" | "B" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            suffix => panic!("{at}: unknown size suffix {suffix:?} in {value:?}"),
        };
        let number: u64 = digits.parse().unwrap_or_else(|err| panic!("{at}: {value:?}: {err}"));
        number.checked_shl(shift).filter(|bytes| bytes >> shift == number).expect("a size that fits 64 bits")
    };
    match value.split_once(':') {
        Some((soft, hard)) => Rlimit { soft: one(soft), hard: one(hard) },
        None => Rlimit { soft: one(value), hard: one(value) },
    }
}

/// A command line: the program and its arguments, split at whitespace. Prefixes (`-`, `+`, `!`
/// ..., some of which run the command with other credentials), quoting, escapes and specifiers
/// (`%n`, `${VAR}`) are not modelled.
fn command(value: &str, at: &str) -> Vec<String> {
    let words: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    let plain = words.first().is_none_or(|program| program.starts_with('/'))
        && !value.contains(['"', '\'', '\\', '%'])
        && !value.contains("${");
    assert!(
        plain,
        "{at}: {value:?} has a prefix, quoting, an escape or a specifier, which tests/src/unit.rs does not \
         model"
    );
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> CapabilitySet {
        let mut set = CapabilitySet::EMPTY;
        for name in names {
            set.insert(CapabilitySet::number(name).unwrap());
        }
        set
    }

    fn service(lines: &str) -> Unit {
        Unit::parse("test", &format!("[Unit]\nDescription=x\n[Service]\n{lines}"))
    }

    #[test]
    fn defaults_are_systemds() {
        let unit = service("");
        assert_eq!(unit.name, "test");
        assert!(!unit.dynamic_user && !unit.no_new_privileges);
        assert_eq!(unit.ambient_capabilities, CapabilitySet::EMPTY);
        assert_eq!(unit.capability_bounding_set, CapabilitySet::ALL);
        assert_eq!((unit.state_directory_mode, unit.runtime_directory_mode), (0o755, 0o755));
        assert_eq!((unit.limit_memlock, unit.umask), (None, None));
    }

    #[test]
    fn comments_sections_whitespace_and_continuations() {
        let unit = Unit::parse(
            "test",
            "# a comment\n; another\n[Unit]\nDynamicUser=no\n\n[Service]\n  DynamicUser = yes  \n\
             AmbientCapabilities=CAP_NET_ADMIN \\\n    CAP_BPF\n[Install]\nNoNewPrivileges=yes\n",
        );
        assert!(unit.dynamic_user, "only [Service] counts, spaces around = do not");
        assert!(!unit.no_new_privileges, "[Install] is not [Service]");
        assert_eq!(unit.ambient_capabilities, set(&["CAP_NET_ADMIN", "CAP_BPF"]));
    }

    #[test]
    fn capability_lists_accumulate_reset_and_invert() {
        let unit =
            service("CapabilityBoundingSet=CAP_NET_ADMIN\nCapabilityBoundingSet=CAP_BPF cap_perfmon\n");
        assert_eq!(unit.capability_bounding_set, set(&["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"]));
        let unit = service("CapabilityBoundingSet=CAP_NET_ADMIN\nCapabilityBoundingSet=\n");
        assert_eq!(unit.capability_bounding_set, CapabilitySet::EMPTY, "empty: no capability at all");
        let unit = service("CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_BPF\n");
        assert_eq!(unit.capability_bounding_set, set(&["CAP_BPF"]));
        let unit = service("CapabilityBoundingSet=~CAP_SYS_ADMIN\n");
        assert_eq!(unit.capability_bounding_set, set(&["CAP_SYS_ADMIN"]).complement());
        let unit =
            service("CapabilityBoundingSet=CAP_BPF CAP_SYS_ADMIN\nCapabilityBoundingSet=~CAP_SYS_ADMIN\n");
        assert_eq!(unit.capability_bounding_set, set(&["CAP_BPF"]));
        let unit = service("AmbientCapabilities=CAP_BPF\nAmbientCapabilities=CAP_PERFMON\n");
        assert_eq!(unit.ambient_capabilities, set(&["CAP_BPF", "CAP_PERFMON"]));
    }

    #[test]
    #[should_panic(expected = "unknown capability CAP_NET_ADMN")]
    fn an_unknown_capability_is_a_panic() {
        service("AmbientCapabilities=CAP_NET_ADMN\n");
    }

    #[test]
    #[should_panic(expected = "SupplementaryGroups= changes who the daemon runs as")]
    fn a_credential_directive_the_tests_do_not_model_is_a_panic() {
        service("SupplementaryGroups=lbops\n");
    }

    #[test]
    fn directories_modes_limits_and_umask() {
        let unit = service(
            "StateDirectory=a b\nStateDirectory=c\nStateDirectoryMode=0700\nRuntimeDirectory=x\n\
             RuntimeDirectory=\nRuntimeDirectory=y\nRuntimeDirectoryMode=750\nLimitMEMLOCK=64K:infinity\n\
             UMask=0077\n",
        );
        assert_eq!(unit.state_directory, ["a", "b", "c"]);
        assert_eq!(unit.runtime_directory, ["y"], "an empty assignment resets the list");
        assert_eq!((unit.state_directory_mode, unit.runtime_directory_mode), (0o700, 0o750));
        assert_eq!(unit.limit_memlock, Some(Rlimit { soft: 65_536, hard: u64::MAX }));
        assert_eq!(unit.umask, Some(0o077));
        assert_eq!(service("LimitMEMLOCK=8M\n").limit_memlock, Some(Rlimit { soft: 8 << 20, hard: 8 << 20 }));
    }

    #[test]
    fn commands_split_into_program_and_arguments() {
        let unit = service(
            "ExecStart=/usr/bin/libraflux daemon\nExecReload=/bin/kill -HUP $MAINPID\nExecReload=/bin/true\n",
        );
        assert_eq!(unit.exec_start, ["/usr/bin/libraflux", "daemon"]);
        assert_eq!(unit.exec_reload, [vec!["/bin/kill", "-HUP", "$MAINPID"], vec!["/bin/true"]]);
        let reset =
            service("ExecStart=/bin/a\nExecStart=\nExecStart=/bin/b x\nExecReload=/bin/c\nExecReload=\n");
        assert_eq!(reset.exec_start, ["/bin/b", "x"]);
        assert!(reset.exec_reload.is_empty());
        let stop = service(
            "ExecStopPost=/bin/a\nExecStopPost=\nExecStopPost=/usr/bin/libraflux announce withdraw\n",
        );
        assert_eq!(stop.exec_stop_post, [vec!["/usr/bin/libraflux", "announce", "withdraw"]]);
    }

    #[test]
    #[should_panic(expected = "has a prefix, quoting")]
    fn a_command_with_a_prefix_is_a_panic() {
        service("ExecStart=+/usr/bin/libraflux daemon\n");
    }

    #[test]
    fn the_dynamic_uid_is_in_systemds_range() {
        let unit = service("DynamicUser=yes\n");
        assert!(DYNAMIC_UIDS.contains(&unit.dynamic_uid()), "{}", unit.dynamic_uid());
    }

    /// The unit we ship parses, every directive of it known to this module where it matters.
    #[test]
    fn the_shipped_unit_parses() {
        let unit = Unit::load();
        assert_eq!(unit.name, "libraflux");
        assert!(unit.dynamic_user);
        assert!(!unit.ambient_capabilities.is_empty());
        assert!(unit.ambient_capabilities.is_subset(unit.capability_bounding_set));
        assert_eq!(unit.exec_start.first().map(String::as_str), Some("/usr/bin/libraflux"));
        assert_eq!(unit.exec_stop_post, [vec!["/usr/bin/libraflux", "announce", "withdraw"]]);
        assert_eq!(unit.state_directory_on_a_node(), Path::new("/var/lib/libraflux"));
        assert_eq!(unit.runtime_directory_on_a_node(), Path::new("/run/libraflux"));
    }
}
