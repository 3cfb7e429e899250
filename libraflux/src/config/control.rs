//! The `control:` section: who besides root and the daemon's own user may use the daemon's
//! control socket (docs/control.md).

use super::{
    decode::{Diagnostics, Field},
    keys::{Key, Section, Shape, Text},
    schema::clean,
};
use crate::control::{Group, peer};

/// `control:` of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Members of this group may use the control socket. Resolved to its gid when the
    /// configuration loads: a group that does not exist on the node is an error.
    pub group: Option<Group>,
}

pub(super) const CONTROL: Section = Section {
    context: "control",
    doc: "Who may use the daemon's control socket besides root and the daemon's user.",
    keys: &[&GROUP],
};

/// [`is_group_name`].
const GROUP: Key = Key::optional(
    "group",
    Shape::Text(Text::matching(r"^[A-Za-z_][A-Za-z0-9_-]*\$?$").at_most(32)),
    "A group whose members may use the control socket; it must exist on the node.",
);

pub(super) fn control(d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<Control> {
    let map = d.section(field.value, field.position(), &CONTROL)?;
    clean(d, |d| {
        let group = map.get(GROUP.name).and_then(|field| {
            let name = d.string(field)?;
            if !is_group_name(name) {
                d.error(field.position(), format!("control.group: {name:?} is not a group name"));
                return None;
            }
            match peer::group_id(name) {
                Ok(Some(gid)) => Some(Group { name: name.to_owned(), gid }),
                Ok(None) => {
                    d.error(
                        field.position(),
                        format!("control.group: there is no group {name:?} on this node"),
                    );
                    None
                }
                Err(err) => {
                    d.error(field.position(), format!("control.group: cannot look up group {name:?}: {err}"));
                    None
                }
            }
        });
        Control { group }
    })
}

/// What shadow-utils accepts by default: a letter or `_` first, then letters, digits, `_`, `-`
/// (and a trailing `$`), at most 32 bytes.
fn is_group_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    name.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
pub(super) mod tests {
    use crate::config::{Source, validate};

    /// `text` as `/etc/libraflux/config.yaml` on node `lb-a`, validated; the errors as printed.
    pub(in crate::config) fn load(text: &str) -> Result<crate::config::Config, String> {
        validate(&[Source::new("/etc/libraflux/config.yaml", text)], "lb-a")
            .map_err(|errors| errors.to_string())
    }

    #[test]
    fn a_group_that_exists_resolves_to_its_gid() {
        let config = load("control:\n  group: root\n").unwrap();
        let group = config.control.group.expect("a group");
        assert_eq!((group.name.as_str(), group.gid), ("root", 0));
        assert_eq!(load("services: []\n").unwrap().control.group, None);
    }

    #[test]
    fn bad_groups_are_errors_at_their_position() {
        let errors = load("control:\n  group: no-such-group-libraflux\n  mode: 0666\n").unwrap_err();
        assert!(
            errors.contains("/etc/libraflux/config.yaml:2:10: control.group: there is no group \"no-such-group-libraflux\""),
            "{errors}"
        );
        assert!(errors.contains("/etc/libraflux/config.yaml:3:3:"), "unknown key: {errors}");
        let errors = load("control:\n  group: \"ops team\"\n").unwrap_err();
        assert!(errors.contains(":2:10: control.group: \"ops team\" is not a group name"), "{errors}");
        let errors = load("control:\n  group: 17\n").unwrap_err();
        assert!(errors.contains(":2:10:"), "{errors}");
    }
}
