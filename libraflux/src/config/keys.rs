//! What each key of the configuration accepts, one table per mapping. The decoder takes its
//! allowed keys, integer ranges, choices, defaults and required keys from these tables, and
//! [`super::json_schema`] describes the same tables as a JSON Schema, so that the two cannot
//! disagree. The tables live beside the decoder of their section.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::decode::{Diagnostics, Field, Map};

/// A mapping of the configuration and the keys it allows.
#[derive(Debug)]
pub(super) struct Section {
    /// Prefixes field names in messages (`health` gives `health.interval`); empty at the top.
    pub context: &'static str,
    pub doc: &'static str,
    pub keys: &'static [&'static Key],
}

impl Section {
    pub fn names(&self) -> Vec<&'static str> {
        self.keys.iter().map(|key| key.name).collect()
    }
}

/// One key of a mapping.
#[derive(Debug)]
pub(super) struct Key {
    pub name: &'static str,
    pub shape: Shape,
    pub presence: Presence,
    /// What an absent key means, when that is a value; other defaults are in `doc`.
    pub default: Option<Default>,
    pub doc: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Presence {
    Optional,
    Required,
    /// Required unless the named key is set, and not allowed beside it (`vip` and `fwmark`).
    Unless(&'static str),
    /// Allowed only beside the named key (`family` and `fwmark`).
    OnlyWith(&'static str),
}

/// What a key's value may be.
#[derive(Debug)]
pub(super) enum Shape {
    /// An unquoted decimal integer in `min..=max`.
    Integer {
        min: u64,
        max: u64,
    },
    /// A humantime duration such as `500ms`, `30s` or `5m`.
    Duration,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Text, restricted as the decoder restricts it.
    Text(Text),
    /// An IPv4 or IPv6 address.
    Ip,
    /// A multicast IPv4 or IPv6 address.
    MulticastIp,
    /// `address:port`, IPv6 as `[address]:port`.
    SocketAddr,
    /// A service key (`tcp:192.0.2.1:80`, `fwmark:17`) or an address.
    ServiceKeyOrIp,
    /// A share: `5%`, or `5`, from 1 to 100.
    Percent,
    Mapping(&'static Section),
    /// `health:`: the common keys, and those of the chosen type.
    Health,
    List {
        item: &'static Shape,
        min: u64,
        max: Option<u64>,
    },
    /// One item, or a list of them.
    OneOrList(&'static Shape),
}

/// Text as the decoder accepts it. `pattern` is an ECMA-262 regular expression that the
/// decoder's own check agrees with (a test holds them together); lengths are in characters.
#[derive(Debug)]
pub(super) struct Text {
    pub pattern: Option<&'static str>,
    pub min_len: u64,
    pub max_len: Option<u64>,
}

impl Text {
    pub const ANY: Self = Self { pattern: None, min_len: 0, max_len: None };

    pub const fn matching(pattern: &'static str) -> Self {
        Self { pattern: Some(pattern), min_len: 0, max_len: None }
    }

    pub const fn at_most(self, max_len: u64) -> Self {
        Self { max_len: Some(max_len), ..self }
    }
}

/// An absolute path, or the bare file name of a systemd credential.
pub(super) const CREDENTIAL_PATH: Text = Text::matching(r"^(/.*|[^/]*[^/.][^/]*|\.{3,})$");

/// The value an absent key takes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Default {
    Integer(u64),
    Duration(Duration),
    /// A choice or a text.
    Word(&'static str),
    Ip(IpAddr),
    SocketAddr(SocketAddr),
    Percents(&'static [u8]),
    Integers(&'static [u16]),
}

impl Key {
    /// A key with no default, written or not.
    pub const fn optional(name: &'static str, shape: Shape, doc: &'static str) -> Self {
        Self { name, shape, presence: Presence::Optional, default: None, doc }
    }

    pub const fn required(name: &'static str, shape: Shape, doc: &'static str) -> Self {
        Self { name, shape, presence: Presence::Required, default: None, doc }
    }

    pub const fn defaults_to(name: &'static str, shape: Shape, default: Default, doc: &'static str) -> Self {
        Self { name, shape, presence: Presence::Optional, default: Some(default), doc }
    }

    /// Its field in `map`; a required key that is missing is an error.
    pub fn field<'n>(&self, d: &mut Diagnostics<'_>, map: &Map<'n>) -> Option<Field<'n>> {
        match self.presence {
            Presence::Required => d.required(map, self.name),
            _ => map.get(self.name),
        }
    }

    /// The integer `field` holds, in this key's range.
    pub fn integer<T: TryFrom<u64>>(&self, d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<T> {
        let Shape::Integer { min, max } = self.shape else { panic!("{} is not an integer key", self.name) };
        d.integer(field, min, max)
    }

    /// The word `field` holds, one of this key's choices.
    pub fn choice(&self, d: &mut Diagnostics<'_>, field: Field<'_>) -> Option<&'static str> {
        let Shape::Choice(choices) = self.shape else { panic!("{} is not a choice", self.name) };
        d.choice(field, choices)
    }

    /// The integer written under this key, or its default.
    pub fn integer_or_default<T: TryFrom<u64>>(&self, d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<T> {
        match map.get(self.name) {
            Some(field) => self.integer(d, field),
            None => Some(self.default_integer()),
        }
    }

    /// The integer written under this key, if any.
    pub fn optional_integer<T: TryFrom<u64>>(
        &self,
        d: &mut Diagnostics<'_>,
        map: &Map<'_>,
    ) -> Option<Option<T>> {
        map.get(self.name).map_or(Some(None), |field| self.integer(d, field).map(Some))
    }

    /// The duration written under this key, or its default.
    pub fn duration_or_default(&self, d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<Duration> {
        map.get(self.name).map_or(Some(self.default_duration()), |field| d.duration(field))
    }

    /// The word written under this key (one of its choices), or its default.
    pub fn choice_or_default(&self, d: &mut Diagnostics<'_>, map: &Map<'_>) -> Option<&'static str> {
        match map.get(self.name) {
            Some(field) => self.choice(d, field),
            None => Some(self.default_word()),
        }
    }

    pub fn default_integer<T: TryFrom<u64>>(&self) -> T {
        match self.default {
            Some(Default::Integer(value)) => {
                T::try_from(value).unwrap_or_else(|_| panic!("{}: default {value} out of range", self.name))
            }
            other => panic!("{} has no integer default: {other:?}", self.name),
        }
    }

    pub fn default_duration(&self) -> Duration {
        match self.default {
            Some(Default::Duration(value)) => value,
            other => panic!("{} has no duration default: {other:?}", self.name),
        }
    }

    pub fn default_word(&self) -> &'static str {
        match self.default {
            Some(Default::Word(value)) => value,
            other => panic!("{} has no word default: {other:?}", self.name),
        }
    }
}

impl Diagnostics<'_> {
    /// Checks that `node` is a mapping of `section`'s keys (see [`Diagnostics::mapping`]).
    pub fn section<'n>(
        &mut self,
        node: &'n marked_yaml::Node,
        at: Option<super::Position>,
        section: &Section,
    ) -> Option<Map<'n>> {
        self.mapping(node, at, section.context, &section.names())
    }
}

/// Every section of the configuration, each once, found from the top.
pub(super) fn all_sections() -> Vec<&'static Section> {
    fn walk(shape: &'static Shape, found: &mut Vec<&'static Section>) {
        match shape {
            Shape::Mapping(section) if !found.iter().any(|known| std::ptr::eq(*known, *section)) => {
                found.push(section);
                for key in section.keys {
                    walk(&key.shape, found);
                }
            }
            Shape::Health => {
                for key in super::health::all_keys() {
                    walk(&key.shape, found);
                }
            }
            Shape::List { item, .. } | Shape::OneOrList(item) => walk(item, found),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&Shape::Mapping(&super::schema::TOP), &mut found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key's default fits its shape: an integer in range, a word among the choices.
    #[test]
    fn every_default_fits_its_key() {
        let mut keys: Vec<&Key> =
            all_sections().iter().flat_map(|section| section.keys.iter().copied()).collect();
        keys.extend(super::super::health::all_keys());
        assert!(keys.len() > 60, "{} keys", keys.len());
        for key in keys {
            let fits = match (&key.shape, key.default) {
                (_, None) => true,
                (Shape::Integer { min, max }, Some(Default::Integer(value))) => {
                    (*min..=*max).contains(&value)
                }
                (Shape::Duration, Some(Default::Duration(_))) => true,
                (Shape::Choice(choices), Some(Default::Word(word))) => choices.contains(&word),
                (Shape::Text(_), Some(Default::Word(_))) => true,
                (Shape::MulticastIp, Some(Default::Ip(ip))) => ip.is_multicast(),
                (Shape::SocketAddr, Some(Default::SocketAddr(_))) => true,
                (Shape::List { item, .. }, Some(Default::Percents(_))) => matches!(item, Shape::Percent),
                (Shape::List { item, .. }, Some(Default::Integers(values))) => {
                    matches!(item, Shape::Integer { min, max } if values.iter().all(|v| (*min..=*max).contains(&u64::from(*v))))
                }
                _ => false,
            };
            assert!(fits, "{}: default {:?} does not fit {:?}", key.name, key.default, key.shape);
            let unless = matches!(key.presence, Presence::Unless(_) | Presence::OnlyWith(_));
            assert!(!(unless && key.default.is_some()), "{}: a conditional key with a default", key.name);
        }
    }
}
